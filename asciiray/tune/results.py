"""Reading an experiment back (finished or not, local or S3): one row per trial, a table, a CSV, a PNG.

Everything comes from Ray's own objects: the experiment's `ray.tune.ExperimentAnalysis`
(each trial's state and searched values) and the `ray.tune.ResultGrid` built on it
(each trial's `Result`: its last metrics, its error, its per-epoch
`metrics_dataframe`) and, for the checkpoints a trial still keeps, its training
run's `ray.train.Result` (`best_checkpoints`, with the metrics of each). Tune
itself holds no checkpoint of a trial: the training run inside stores them.
The state comes from the trial, not from the `done` flag of its last result,
which a trial resumed by Tune can finish without.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asciiray import config, storage
from asciiray.errors import UserError
from asciiray.train.job import STOP_FILE
from asciiray.train.options import TrainConfig
from asciiray.tune.spec import RUN_NAME, SPEC_FILE, TRIAL_PREFIX, Spec, spec_from_dict


@dataclass(frozen=True)
class TrialRow:
    """One trial as recorded: its searched values, its best metric and best checkpoint, how it ended."""

    trial_id: str
    params: dict[str, Any]
    best: float | None
    epochs: int
    status: str
    reason: str
    checkpoint: str | None


@dataclass
class Experiment:
    """An experiment as its storage holds it: the spec, one row per trial, every trial's reported results."""

    uri: str
    spec: Spec
    trials: list[TrialRow]
    frames: dict[str, Any]

    @property
    def best(self) -> TrialRow | None:
        """The trial with the best metric over all its reported epochs."""
        scored = [t for t in self.trials if t.best is not None]
        if not scored:
            return None
        return (min if self.spec.mode == "min" else max)(scored, key=lambda t: t.best)


def read(uri: str) -> Experiment:
    """Everything an experiment directory (local or s3://) holds about its trials so far."""
    stored = storage.join(uri, SPEC_FILE)
    if not storage.exists(stored):
        raise UserError(f"{uri} holds no asciiray tune experiment (no {SPEC_FILE}): "
                        f"pass the experiment directory, <storage_path>/<name>")
    spec = spec_from_dict(json.loads(storage.read_bytes(stored)), source=stored, default_name=Path(uri).name)
    from ray.tune import ExperimentAnalysis, ResultGrid

    fs, path = storage.for_ray(uri)
    try:
        analysis = ExperimentAnalysis(path, storage_filesystem=fs)
    except ValueError:
        raise UserError(f"{uri}: the experiment has not recorded any trial yet") from None
    except (AttributeError, ImportError) as exc:
        raise written_by_older_version(uri, exc) from None
    trials = {t.trial_id: t for t in analysis.trials}
    rows, frames = [], {}
    for result in ResultGrid(analysis):
        trial = trials[Path(result.path).name.removeprefix(TRIAL_PREFIX)]
        frames[trial.trial_id] = result.metrics_dataframe
        rows.append(_row(storage.join(uri, Path(result.path).name, RUN_NAME), spec, trial, result))
    return Experiment(uri=uri, spec=spec, trials=rows, frames=frames)


def written_by_older_version(uri: str, exc: Exception) -> UserError:
    """Tune pickles the experiment's functions and callbacks by name: code that has moved since cannot load them."""
    return UserError(f"experiment {uri} was written by an older asciiray whose Tune state this one cannot load "
                     f"({exc}); its trials' training runs stay readable in {storage.join(uri, TRIAL_PREFIX + '*')}")


def _row(run_uri: str, spec: Spec, trial: Any, result: Any) -> TrialRow:
    """A trial's summary from its Tune Result (the best of its reported results, its error) and its state."""
    epochs = int((result.metrics or {}).get("epoch") or 0)
    frame = result.metrics_dataframe
    best = None
    if frame is not None and spec.metric in frame:
        scores = [v for v in frame[spec.metric] if _finite(v)]
        best = (min if spec.mode == "min" else max)(scores) if scores else None
    reason = ""
    if result.error is not None:
        status, reason = "failed", _stop_reason(run_uri) or failure_reason(result.error)
    elif trial.status == "TERMINATED":  # finished, or stopped by the scheduler
        status = "done" if epochs >= spec.max_t else "stopped early"
    else:  # an interrupted or unfinished experiment: a trial that never reported is still to start
        status = "unfinished" if epochs else "pending"
    # Searched values by dotted path (experiments of before the sectioned config used flat names).
    params = config.dotted(TrainConfig, trial.config)
    return TrialRow(trial_id=trial.trial_id, params={p: params.get(p) for p in spec.space}, best=best,
                    epochs=epochs, status=status, reason=reason,
                    checkpoint=_best_checkpoint(run_uri, spec) if best is not None else None)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _best_checkpoint(run_uri: str, spec: Spec) -> str | None:
    """The best, by the spec's metric, of the checkpoints the trial's training run still keeps."""
    from ray.train.v2.api.result import Result  # ray.train.Result under Train v2, which reading needs no Ray for

    # Its INFO lines ("a run snapshot was found ... will be loaded") speak to a run that restarts, not to a reader.
    logging.getLogger("ray.train.v2._internal.execution.checkpoint.checkpoint_manager").setLevel(logging.WARNING)
    fs, path = storage.for_ray(run_uri)
    try:
        kept = Result.from_path(path, storage_filesystem=fs).best_checkpoints
    except RuntimeError:  # no run there, or one that never recorded a checkpoint
        return None
    except OSError as exc:
        raise UserError(f"{run_uri}: {exc}") from None
    scored = [(m[spec.metric], c) for c, m in kept if _finite(m.get(spec.metric))]
    if not scored:
        return None
    _, checkpoint = (min if spec.mode == "min" else max)(scored, key=lambda s: s[0])
    return storage.join(run_uri, Path(checkpoint.path).name)


def _stop_reason(run_uri: str) -> str:
    """Why the training run stopped itself (e.g. a loss that stayed non-finite), if it did."""
    stop_uri = storage.join(run_uri, STOP_FILE)
    if not storage.exists(stop_uri):
        return ""
    stop = json.loads(storage.read_bytes(stop_uri))
    return f"stopped at epoch {stop['epoch']}: {stop['reason']}"


def failure_reason(error: Any) -> str:
    """The one line of a trial's error trace that says what went wrong (Ray wraps it in tracebacks)."""
    lines = [line.strip() for line in str(error or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(("File ", "^", "~", "Traceback", "During handling", "The above exception")):
            return re.sub(r"^([\w.]+(Error|Exception|Stopped)):\s*", "", line)
    return "unknown error"


def format_params(values: dict[str, Any]) -> str:
    """key=value pairs of a trial's searched options, numbers to 4 significant digits."""
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def results_table(experiment: Experiment) -> str:
    """The trials as a text table, best first, then one line per failure with its reason."""
    spec = experiment.spec
    keys = list(spec.space)
    header = ["trial", *keys, f"best {spec.metric}", "epochs", "status"]
    sign = 1 if spec.mode == "min" else -1
    order = sorted(experiment.trials, key=lambda t: (t.best is None, sign * (t.best or 0.0)))
    body = [[t.trial_id, *(_fmt(t.params.get(k)) for k in keys),
             f"{t.best:.4f}" if t.best is not None else "-", str(t.epochs), t.status] for t in order]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{t.trial_id} failed: {t.reason}" for t in order if t.status == "failed"]
    return "\n".join(lines)


def to_csv(experiment: Experiment, path: str) -> None:
    """Every result every trial reported (one row per trial and epoch), with its status, to a local or S3 file."""
    import pandas as pd

    status = {t.trial_id: t.status for t in experiment.trials}
    frames = [frame.assign(trial_id=trial_id, status=status[trial_id])
              for trial_id, frame in experiment.frames.items() if frame is not None and len(frame)]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trial_id", "status"])
    first = ["trial_id", "status", *[c for c in table.columns if c.startswith("config/")], "epoch"]
    table = table[[c for c in first if c in table] + [c for c in table.columns if c not in first]]
    storage.write_bytes(path, table.to_csv(index=False).encode())


def plot_png(experiment: Experiment, path: str) -> None:
    """The best metric of each trial against each searched option, one panel per option."""
    from matplotlib.figure import Figure

    spec = experiment.spec
    fig = Figure(figsize=(4.2 * len(spec.space), 3.6), layout="constrained")
    axes = fig.subplots(1, len(spec.space), squeeze=False)[0]
    colours = {"done": "tab:blue", "stopped early": "tab:orange", "unfinished": "tab:gray"}
    scored = [t for t in experiment.trials if t.best is not None]
    for ax, (key, dist) in zip(axes, spec.space.items()):
        xs = [t.params.get(key) for t in scored]
        if dist.values:  # a choice or grid: one tick per value, in the spec's order
            labels = [_fmt(v) for v in dist.values]
            ax.set_xticks(range(len(labels)), labels)
            xs = [labels.index(_fmt(x)) for x in xs]
        elif dist.type == "loguniform":
            ax.set_xscale("log")
        for status, colour in colours.items():
            pts = [(x, t.best) for x, t in zip(xs, scored) if t.status == status]
            if pts:
                ax.scatter(*zip(*pts), c=colour, label=status)
        ax.set_xlabel(key)
        ax.set_ylabel(spec.metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{spec.name}: best {spec.metric} ({spec.mode}) per trial")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    storage.write_bytes(path, buf.getvalue())
