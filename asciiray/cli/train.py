"""`asciiray train` (the main job) and `asciiray reconstruct`."""

from __future__ import annotations

import argparse
import sys

from asciiray import config
from asciiray.errors import UserError

EXAMPLES = """examples:
  asciiray train                                   # small preset, embedded corpus, CPU or GPU
  asciiray train --corpus ./corpus --preset seed -b 256 -n 100 --num-workers 4 --use-gpu
  asciiray train --storage-path s3://bucket/runs --run-name cats
  asciiray train --storage-path s3://bucket/runs --run-name cats --resume
"""


def register(sub: argparse._SubParsersAction) -> None:
    from asciiray.train.options import TrainConfig

    add_training_parser(sub, "train", TrainConfig, run_train, EXAMPLES, help="train the VAE with Ray Train",
                        description="Train the ASCII-art VAE on Ray Train (DDP, mixed precision, checkpoints "
                                    "in a local directory or S3). With no options it trains the small preset "
                                    "on 3,000 pieces of the embedded FIGlet corpus in a few minutes on a CPU.")

    r = sub.add_parser("reconstruct", help="print input | reconstruction from a VAE checkpoint",
                       description="Load a VAE checkpoint (a checkpoint or run directory, local or s3://) and "
                                   "print input | reconstruction for text files, or for validation pieces "
                                   "of the corpus it was trained on.")
    r.add_argument("checkpoint", help="checkpoint directory, or a run directory (its latest checkpoint)")
    r.add_argument("files", nargs="*", help="text files, one piece each (default: validation pieces)")
    r.add_argument("-n", type=int, default=3, help="validation pieces to show when no file is given")
    r.add_argument("--png", help="also save the rendered pairs as one PNG (local path or s3://)")
    r.set_defaults(func=run_reconstruct)


def add_training_parser(sub: argparse._SubParsersAction, name: str, options: type, func, examples: str,
                        help: str, description: str) -> None:
    """A training command: every field of `options` as a flag, plus --config."""
    p = sub.add_parser(name, help=help, description=description, epilog=examples,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file whose keys are the long option names; flags override it")
    config.add_arguments(p, options)
    p.set_defaults(func=func)


def fit(train, options: type, args: argparse.Namespace):
    """Build the options from flags and --config, train; Ray's Result, or None after a one-line error."""
    from ray.train import TrainingFailedError

    from asciiray.train import runner

    cfg = config.from_args(options, args, args.config)
    try:
        return train(cfg, explicit_keys(args, args.config))
    except runner.RunStopped as exc:
        print(f"asciiray: {exc}", file=sys.stderr)
    except TrainingFailedError as exc:
        line = last_line(exc)
        # pyarrow's S3 errors say "AWS Error ...": storage failed after its retries, the run can go on later.
        hint = ("; when S3 is reachable again, --resume continues the run from its last complete checkpoint"
                if "AWS Error" in line else "")
        print(f"asciiray: training failed: {line}{hint}", file=sys.stderr)
    return None


def explicit_keys(args: argparse.Namespace, config_file: str | None) -> set[str]:
    """Keys the user set (flags are SUPPRESSed unless given, so the namespace holds only those)."""
    keys = {k for k in vars(args) if k not in ("func", "command", "config", "verbose")}
    if config_file:
        keys |= {k.replace("-", "_") for k in config.read_file(config_file)}
    return keys


def run_train(args: argparse.Namespace) -> int:
    from asciiray.train import vae

    result = fit(vae.train, vae.TrainConfig, args)
    if result is None:
        return 1
    m = result.metrics
    print(f"\ndone: {m['epoch']} epochs, val loss {m['val/loss']:.4f}, char_acc {m['val/char_acc']:.3f}, "
          f"nonspace_acc {m['val/nonspace_acc']:.3f}, space_collapse {m['val/space_collapse']:.3f}")
    if result.checkpoint:
        from asciiray.train.checkpoint import uri_of

        print(f"latest checkpoint: {uri_of(result.checkpoint)}")
        print_pairs(show_reconstructions(uri_of(result.checkpoint), [], 1))
    return 0


def last_line(exc: Exception) -> str:
    """The error line of a worker's traceback, which Ray folds into the message."""
    lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith(" ")]
    return lines[-1] if lines else type(exc).__name__


def show_reconstructions(checkpoint_uri: str, files: list[str], n: int, png: str | None = None) -> list[str]:
    import numpy as np

    from asciiray import charset, data
    from asciiray.train import vae

    model, meta = vae.load(checkpoint_uri)
    grid = model.cfg.grid
    if files:
        texts = [read_piece(f, grid) for f in files]
    else:
        texts = data.validation_pieces(meta["corpus"], grid, meta["config"]["validation_prop"], n)
    inputs = np.stack([charset.encode(t, grid) for t in texts])
    recons = vae.reconstruct(model, inputs)
    if png:
        save_pairs_png(png, inputs, recons, meta["config"]["font_res"])
    return [charset.side_by_side(t, charset.decode(r)) for t, r in zip(texts, recons)]


def read_piece(path: str, grid: int) -> str:
    from asciiray import charset

    try:
        with open(path, encoding="utf-8") as f:
            text = charset.normalize(f.read())
        charset.validate(text)
        charset.encode(text, grid)
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except charset.InvalidPiece as exc:
        raise UserError(f"{path}: {exc} (the model reads printable ASCII that fits {grid}x{grid})") from None
    return text


def save_pairs_png(path: str, inputs, recons, font_res: int) -> None:
    import numpy as np
    import torch

    from asciiray.render import glyph_atlas, pair_image, save_png

    atlas = glyph_atlas(font_res)
    rows = [pair_image(torch.from_numpy(a), torch.from_numpy(b), atlas) for a, b in zip(inputs, recons)]
    save_png(path, np.concatenate(rows, axis=0))


def print_pairs(pairs: list[str]) -> None:
    print("\ninput | reconstruction")
    for pair in pairs:
        print(pair)
        print()


def run_reconstruct(args: argparse.Namespace) -> int:
    print_pairs(show_reconstructions(args.checkpoint, args.files, args.n, args.png))
    if args.png:
        print(f"saved {args.png}")
    return 0
