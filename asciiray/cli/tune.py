"""`asciiray tune SPEC` (run or resume a Ray Tune search) and `asciiray tune results PATH` (read one back)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from asciiray.errors import UserError

if TYPE_CHECKING:
    from asciiray.tune.results import Experiment

USAGE = """asciiray tune SPEC [--resume] [--name NAME] [--storage-path PATH] [--address ADDRESS]
       asciiray tune results PATH [--csv FILE] [--png FILE]"""

EXAMPLES = """examples:
  asciiray tune tune/smoke.yaml                          # 4 tiny trials on CPU, about 2 minutes
  asciiray tune tune/coefficients.yaml --storage-path s3://bucket/tune
  asciiray tune tune/coefficients.yaml --storage-path s3://bucket/tune --resume
  asciiray tune results s3://bucket/tune/coefficients --csv trials.csv --png trials.png
  tensorboard --logdir ./runs/smoke                      # every trial's training curves side by side

A spec names the base training options (as in a --config file), the search
space (training options by dotted path, e.g. loss.kl_coeff), the search
algorithm, the scheduler, the metric, the trials' resources and the storage
path: see tune/coefficients.yaml. The experiment lives in <storage_path>/<name>;
each trial is a training run in <experiment>/trial_<id>/train. Progress is
logged after every trial event.
"""

RUN_ONLY = ("resume", "name", "storage_path", "address")
RESULTS_ONLY = ("csv", "png")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="search training coefficients with Ray Tune, or read a search's results",
                       usage=USAGE, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run the Ray Tune experiment a spec describes (each trial is an `asciiray "
                                   "train` run with its own coefficients), resume it after an interruption, "
                                   "or read a finished or partial experiment (local or s3://) back.")
    p.add_argument("target", metavar="SPEC|results", help="a spec file (YAML) to run, or `results`")
    p.add_argument("path", nargs="?", metavar="PATH", help="with `results`: the experiment directory "
                                                             "(<storage_path>/<name>, local or s3://)")
    run = p.add_argument_group("running a spec")
    run.add_argument("--resume", action="store_true", default=None,
                     help="continue the interrupted experiment of this spec: finished trials are kept, "
                          "started ones continue from their latest checkpoint")
    run.add_argument("--name", help="experiment name (default: the spec's name, else the file name)")
    run.add_argument("--storage-path", help="where experiments live: a directory or s3://bucket/prefix "
                                            "(default: the spec's storage_path, else ./runs)")
    run.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else start a local Ray)")
    res = p.add_argument_group("reading results")
    res.add_argument("--csv", metavar="FILE", help="write every trial's results (one row per epoch) to CSV")
    res.add_argument("--png", metavar="FILE", help="plot the metric against each searched option")
    p.set_defaults(func=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    if args.target == "results":
        _reject(args, RUN_ONLY, "tune results")
        if not args.path:
            raise UserError("tune results needs PATH: the experiment directory, <storage_path>/<name>")
        return show_results(args.path, args.csv, args.png)
    _reject(args, RESULTS_ONLY, "tune SPEC")
    if args.path:
        raise UserError(f"tune SPEC takes one spec file; to read an experiment use `asciiray tune results "
                        f"{args.path}`")
    return run_spec(args)


def _reject(args: argparse.Namespace, keys: tuple[str, ...], command: str) -> None:
    for key in keys:
        if getattr(args, key) is not None:
            raise UserError(f"--{key.replace('_', '-')} does not apply to `asciiray {command}`")


def run_spec(args: argparse.Namespace) -> int:
    from asciiray.tune.run import run
    from asciiray.tune.spec import load_spec

    spec = load_spec(args.target, name=args.name, storage_path=args.storage_path)
    print(f"experiment {spec.uri}: {'resuming' if args.resume else 'starting'} {spec.search} search over "
          f"{', '.join(spec.space)}; {spec.metric} ({spec.mode})", flush=True)
    experiment = run(spec, resume=bool(args.resume), address=args.address)
    report(experiment)
    print(f"training curves of every trial: tensorboard --logdir {experiment.uri}")
    if any(t.status in ("unfinished", "pending") for t in experiment.trials):
        print(f"\nthe experiment is not finished: continue it with "
              f"`asciiray tune {args.target} --resume`", file=sys.stderr)
        return 130
    return 0 if experiment.best else 1


def show_results(path: str, csv: str | None, png: str | None) -> int:
    from asciiray import storage
    from asciiray.tune import results

    for flag, uri in (("--csv", csv), ("--png", png)):
        if uri:
            storage.check_writable(uri, flag, file=True)
    experiment = results.read(path)
    report(experiment)
    if csv:
        results.to_csv(experiment, csv)
        print(f"saved {csv}")
    if png:
        results.plot_png(experiment, png)
        print(f"saved {png}")
    return 0


def report(experiment: Experiment) -> None:
    from asciiray.tune.results import format_params, results_table

    print()
    print(results_table(experiment))
    best = experiment.best
    if best is None:
        print(f"\nno trial reported {experiment.spec.metric} yet")
        return
    print(f"\nbest trial {best.trial_id}: {experiment.spec.metric} {best.best:.4f} ({format_params(best.params)})")
    print(f"best checkpoint: {best.checkpoint or '(none kept)'}")
