"""`asciiray train`, the main job, and what the training commands share."""

from __future__ import annotations

import argparse
import sys

from asciiray import config

# Options speak of "the prototype": every training command's help says once what it is.
PROTOTYPE = """
"the prototype" in these options is the original single-GPU ASCII-art autoencoder whose
flags and `seed` preset this project follows (docs/TRAINING.md).
"""

EXAMPLES = """examples:
  asciiray train                                   # small preset, embedded corpus, CPU or GPU
  asciiray train --corpus ./corpus --preset seed -b 256 -n 100 --num-workers 4 --use-gpu
  asciiray train --storage-path s3://bucket/runs --run-name cats
  asciiray train --storage-path s3://bucket/runs --run-name cats --resume
  asciiray train --init-from s3://bucket/runs/cats --gumbel-tau-r 0.2 -b 128   # a new run from cats' weights
  asciiray train --max-steps 5000                         # a budget in optimizer steps
  asciiray train --time-budget 60 --run-name long         # an hour of training; then one more:
  asciiray train --time-budget 120 --run-name long --resume
  asciiray train -n 20 --swa-start 15 --swa-lr 5e-4       # average the weights of the last 5 epochs
  asciiray train --learning-rate auto                     # lr-find first, then train with its suggestion
"""

LR_FIND_EXAMPLES = """examples:
  asciiray lr-find                                 # the default run's preset and pieces
  asciiray lr-find --preset seed --corpus ./corpus -b 128 --png seed-lr.png
"""


def register(sub: argparse._SubParsersAction) -> None:
    from asciiray.train.options import DEFAULT_MAX_STEPS, TrainConfig

    add_training_parser(sub, "train", TrainConfig, run_train, EXAMPLES, help="train the VAE with Ray Train",
                        description="Train the ASCII-art VAE on Ray Train (DDP, mixed precision, checkpoints "
                                    "in a local directory or S3). With no options it trains the small-map preset "
                                    "on 3,000 pieces of the embedded FIGlet corpus for "
                                    f"{DEFAULT_MAX_STEPS} steps, about 3 minutes on 2 CPU cores.")

    p = add_training_parser(
        sub, "lr-find", TrainConfig, run_lr_find, LR_FIND_EXAMPLES, help="learning-rate range test of a VAE run",
        description="Train the run's VAE (its preset, loss and --batch-size, on its training pieces) in this "
                    "process for a few hundred Adam steps while the learning rate grows exponentially from "
                    "--min-lr to --max-lr, stopping once the loss diverges; print the suggested rate (where the "
                    "smoothed loss falls fastest) and save the loss-vs-rate plot. `asciiray train "
                    "--learning-rate auto` runs the same test first and trains with its suggestion.")
    p.add_argument("--min-lr", type=float, default=1e-6, help="first learning rate of the ramp (default: 1e-6)")
    p.add_argument("--max-lr", type=float, default=1.0, help="last learning rate of the ramp (default: 1)")
    p.add_argument("--steps", type=int, default=200, help="steps of the ramp (default: 200)")
    p.add_argument("--png", default="lr-find.png", help="where to save the plot, local or s3:// "
                                                         "(default: lr-find.png)")

def add_training_parser(sub: argparse._SubParsersAction, name: str, options: type, func, examples: str,
                        help: str, description: str) -> argparse.ArgumentParser:
    """A training command: every field of `options` as a flag, plus --config."""
    p = sub.add_parser(name, help=help, description=description, epilog=examples + PROTOTYPE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file whose keys are the long option names, flat (kl_coeff: 1e-4), "
                                    "dotted (loss.kl_coeff: 1e-4) or in sections (loss: {kl_coeff: 1e-4}); "
                                    "flags override it")
    config.add_arguments(p, options)
    p.set_defaults(func=func)
    return p


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
        line = last_line(exc)
        # pyarrow's S3 errors say "AWS Error ...": storage failed after its retries, the run can go on later.
        hint = ("; when S3 is reachable again, --resume continues the run from its last complete checkpoint"
                if "AWS Error" in line else "")
        print(f"asciiray: training failed: {line}{hint}", file=sys.stderr)
    return None


def run_train(args: argparse.Namespace) -> int:
    from asciiray.train import vae

    result = fit(vae.train, vae.TrainConfig, args)
    if result is None:
        return 1
    m = result.metrics
    print(f"\ndone: {m['epoch']} epochs, {m['step']} steps, val loss {m['val/loss']:.4f}, char_acc {m['val/char_acc']:.3f}, "
          f"ink_f1 {m['val/ink_f1']:.3f} (precision {m['val/ink_precision']:.3f}, recall {m['val/ink_recall']:.3f}), "
          f"ink_ratio {m['val/ink_ratio']:.2f}, near_collapse {m['val/near_collapse']:.3f}, "
          f"space_collapse {m['val/space_collapse']:.3f}")
    if result.checkpoint:
        from asciiray.train.checkpoint import uri_of

        show_model(uri_of(result.checkpoint))
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


def run_lr_find(args: argparse.Namespace) -> int:
    from asciiray import storage
    from asciiray.train import lr_find, vae

    cfg = config.from_args(vae.TrainConfig, args, args.config)
    lr_find.check_range(args.min_lr, args.max_lr, args.steps)
    storage.check_writable(args.png, "--png", file=True)
    test = vae.find_learning_rate(cfg, None, args.min_lr, args.max_lr, args.steps)
    lr_find.save_plot(test, args.png)
    ended = "the loss diverged" if test.diverged else "the ramp ended"
    print(f"lr-find: {len(test.lrs)} steps from {test.min_lr:g} to {test.lrs[-1]:.3g} ({ended}); lowest smoothed "
          f"loss {min(test.smoothed):.4f}")
    print(f"suggested learning rate: {test.suggestion:.3g}  (asciiray train --learning-rate {test.suggestion:.3g})")
    print(f"saved {args.png}")
    return 0


def last_line(exc: Exception) -> str:
    """The error line of a worker's traceback, which Ray folds into the message."""
    lines = [line for line in str(exc).splitlines() if line.strip() and not line.startswith(" ")]
    return lines[-1] if lines else type(exc).__name__


