"""The `asciiray` command: one entry point, a subcommand per workflow.

Each module named in COMMANDS is a command group: it defines `register(subparsers)`,
which adds its parser(s) and sets `func`; `--help` lists them in this, the workflow's,
order. Modules keep heavy imports (torch, ray) inside the function they run, so
`asciiray --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from asciiray.errors import UserError

COMMANDS = ("scrape", "corpus", "train", "renderer", "tune", "art", "jobs")


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the command, the problem and where help is, no usage block."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="asciiray",
        description="Train variational autoencoders of ASCII art on Ray (local, single GPU or cluster).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"asciiray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asciiray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
