"""`asciiray scrape SITE --out PATH`: crawl one public ASCII-art site into raw piece shards."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from asciiray import config
from asciiray.config import option
from asciiray.errors import UserError
from scrape.crawl import DEFAULT_CONCURRENCY, DEFAULT_DELAY, DEFAULT_TIMEOUT, SITES, CrawlOptionError, crawl

EXAMPLES = """examples:
  asciiray scrape asciiart.eu --out raw/asciiart.eu
  asciiray scrape textart.io --out raw/textart.io --max-pages 200      # a first slice
  asciiray scrape textart.io --out raw/textart.io --resume             # ...continued later
  asciiray corpus build raw/asciiart.eu raw/textart.io --out corpus

Ctrl-C stops a crawl gracefully (pages in flight finish); --resume continues it
without fetching any page twice. Raw pieces land in OUT/pieces-NNNNN.jsonl, the
crawl's state and log in OUT/.crawl/.
"""


@dataclasses.dataclass
class ScrapeConfig:
    """The options of a crawl: each is a flag and a key of the --config file."""

    base_url: str | None = option(None, "crawl a mirror of the site at this address instead of the site")
    max_pages: int | None = option(None, "stop after this many responses in this run (robots.txt included); "
                                         "--resume continues")
    delay: float = option(DEFAULT_DELAY, "seconds between requests at least (AutoThrottle only ever lengthens it)")
    concurrency: int = option(DEFAULT_CONCURRENCY, "requests in flight at most")
    timeout: float = option(DEFAULT_TIMEOUT, "seconds before a download is given up (then retried)")
    resume: bool = option(False, "continue the crawl already in --out (fetches no page twice)")
    ignore_robots: bool = option(False, "do not obey robots.txt (only for a mirror you run yourself)")
    http_cache: str | None = option(None, "directory to keep responses in and answer repeats from "
                                          "(re-crawl after a parser change without fetching again)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scrape", help="crawl an ASCII-art site into raw pieces", epilog=EXAMPLES,
                       description="Crawl one public ASCII-art site politely (robots.txt, a descriptive user "
                                   "agent, a delay between requests, retries, resumable) and store its pieces, "
                                   "exactly as a browser shows them, as JSON Lines shards for "
                                   "`asciiray corpus build`.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("site", choices=SITES, help="the site to crawl")
    p.add_argument("--out", required=True, help="local output directory (raw pieces and crawl state)")
    p.add_argument("--config", help="YAML file whose keys are the long option names; flags override it")
    config.add_arguments(p, ScrapeConfig)
    p.set_defaults(func=run_scrape)


def format_counts(counts: dict[str, Any]) -> str:
    """One progress line, short enough to print every few seconds."""
    errors = sum(counts["errors"].values())
    return f"pages {counts['pages']}  pieces {counts['pieces']}  errors {errors}"


def format_summary(result: dict[str, Any]) -> str:
    """The end-of-crawl report: counts by kind, and where the pieces and the log are."""
    errors = ", ".join(f"{kind} {n}" for kind, n in result["errors"].items() if n) or "none"
    skipped = ", ".join(f"{kind} {n}" for kind, n in result["skipped"].items() if n) or "none"
    return "\n".join([
        f"{result['site']}: {result['finish_reason']}; in this run:",
        f"  pages {result['pages']}, pieces stored {result['pieces']} "
        f"(repeats skipped {result['duplicates']})",
        f"  errors: {errors}",
        f"  not followed: {skipped}",
        f"  raw pieces: {result['out']}/pieces-*.jsonl",
        f"  log: {result['log']}",
    ])


def run_scrape(args: argparse.Namespace) -> int:
    """Exit 0 when the crawl finished or reached --max-pages, 130 when interrupted (resumable)."""
    from asciiray import storage

    cfg = config.from_args(ScrapeConfig, args, args.config)
    for flag, uri in (("--out", args.out), ("--http-cache", cfg.http_cache)):
        if uri and not storage.is_s3(uri):  # crawl() says why s3:// is refused
            storage.check_writable(uri, flag)

    def progress(counts: dict[str, Any]) -> None:
        print(f"  {format_counts(counts)}", flush=True)

    try:
        result = crawl(args.site, args.out, base_url=cfg.base_url, max_pages=cfg.max_pages, delay=cfg.delay,
                       concurrency=cfg.concurrency, resume=cfg.resume, obey_robots=not cfg.ignore_robots,
                       http_cache=cfg.http_cache, timeout=cfg.timeout, progress=progress)
    except CrawlOptionError as exc:
        raise UserError(str(exc)) from None
    except RuntimeError as exc:
        print(f"asciiray: {exc}", file=sys.stderr)
        return 1
    print(format_summary(result))
    reason = result["finish_reason"]
    if reason == "finished":
        return 0
    why = {"shutdown": "interrupted", "closespider_pagecount": "--max-pages reached"}.get(reason, reason)
    print(f"stopped early ({why}): run the same command with --resume to continue")
    return 130 if reason == "shutdown" else 0
