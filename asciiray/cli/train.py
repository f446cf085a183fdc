"""`asciiray train`, the main job, and what the training commands share."""

from __future__ import annotations

import argparse
import sys

from asciiray import config

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


def add_training_parser(sub: argparse._SubParsersAction, name: str, options: type, func, examples: str,
                        help: str, description: str) -> None:
    """A training command: every field of `options` as a flag, plus --config."""
    p = sub.add_parser(name, help=help, description=description, epilog=examples,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file whose keys are the long option names, flat (kl_coeff: 1e-4), "
                                    "dotted (loss.kl_coeff: 1e-4) or in sections (loss: {kl_coeff: 1e-4}); "
                                    "flags override it")
    config.add_arguments(p, options)
    p.set_defaults(func=func)


def fit(train, options: type, args: argparse.Namespace):
    """Build the options from flags and --config, train; Ray's Result, or None after a one-line error."""
    from ray.train import TrainingFailedError

    from asciiray.train import runner

    cfg = config.from_args(options, args, args.config)
    try:
        return train(cfg, config.explicit_keys(options, args, args.config))
    except runner.RunStopped as exc:
        print(f"asciiray: {exc}", file=sys.stderr)
    except TrainingFailedError as exc:
        print(f"asciiray: training failed: {last_line(exc)}", file=sys.stderr)
    return None


def run_train(args: argparse.Namespace) -> int:
    from asciiray.train import vae

    result = fit(vae.train, vae.TrainConfig, args)
    if result is None:
        return 1
    m = result.metrics
    print(f"\ndone: {m['epoch']} epochs, val loss {m['val/loss']:.4f}, char_acc {m['val/char_acc']:.3f}, "
          f"ink_f1 {m['val/ink_f1']:.3f} (precision {m['val/ink_precision']:.3f}, recall {m['val/ink_recall']:.3f}), "
          f"ink_ratio {m['val/ink_ratio']:.2f}, near_collapse {m['val/near_collapse']:.3f}, "
          f"space_collapse {m['val/space_collapse']:.3f}")
    if result.checkpoint:
        show_model(_uri(result.checkpoint))
    return 0


def show_model(uri: str) -> None:
    """After a run: where its checkpoint is, a reconstruction, and its latent space in TensorBoard's projector."""
    from asciiray.cli.art import print_pairs, reconstruction_pairs
    from asciiray.inference import TrainedVAE
    from asciiray.projector import default_logdir, write_projector

    print(f"latest checkpoint: {uri}")
    vae = TrainedVAE.load(uri, "cpu")
    print_pairs(reconstruction_pairs(vae, [], 1))
    logdir = default_logdir(vae)
    print(f"\nprojector: {write_projector(vae, logdir)} validation pieces' mu in {logdir}")


def last_line(exc: Exception) -> str:
    """The error line of a worker's traceback, which Ray folds into the message."""
    lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith(" ")]
    return lines[-1] if lines else type(exc).__name__


def _uri(ckpt) -> str:
    """A Ray Checkpoint's location as a URI our storage layer understands."""
    import pyarrow.fs as pafs

    return ckpt.path if isinstance(ckpt.filesystem, pafs.LocalFileSystem) else "s3://" + ckpt.path
