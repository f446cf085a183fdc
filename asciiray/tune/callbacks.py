"""The Ray callbacks of an experiment: progress lines on the driver, epoch results from each trial to Tune.

Both classes live at module level on purpose. Ray pickles the Tuner's callbacks
with the experiment and brings them back on --resume; a class that can be
imported by name pickles by reference, so the restored callback runs this
code and logs through this module's logger (a class defined inside a function
would be pickled by value, with a frozen copy of its globals). Progress goes
to the `logging` logger of this module, which the CLI shows.

Imported only once Ray is set up (asciiray.runtime.ensure_ray): importing
ray.tune imports ray.train, which must see Ray Train v2 switched on first.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.integration.ray_train import TuneReportCallback

from asciiray.tune.results import failure_reason, format_params

log = logging.getLogger(__name__)


class Progress(Callback):
    """Logs one line per trial event: trials by state, the best result so far, and the event."""

    def __init__(self, metric: str, mode: str, max_t: int) -> None:
        self.metric, self.mode, self.max_t = metric, mode, max_t
        self.best: float | None = None
        self.best_trial: str | None = None

    def _consider(self, value: Any, trial_id: str) -> None:
        if isinstance(value, (int, float)) and math.isfinite(value) and (
                self.best is None or (value < self.best if self.mode == "min" else value > self.best)):
            self.best, self.best_trial = value, trial_id

    def _log(self, trials: list[Any], event: str, ending: Any = None, status: str = "") -> None:
        """Tune calls the trial hooks before it updates the trial's status: `ending` gets `status` here."""
        for t in trials:  # a resumed experiment's earlier results count too
            self._consider((t.last_result or {}).get(self.metric), t.trial_id)
        states = [status if t is ending else t.status for t in trials]
        ended = [t for t, s in zip(trials, states) if s == "TERMINATED"]
        early = sum(1 for t in ended if (t.last_result or {}).get("epoch", 0) < self.max_t)
        best = (f"best {self.metric} {self.best:.4f} ({self.best_trial})" if self.best is not None
                else "no result yet")
        log.info("[%d running, %d pending, %d done, %d stopped early, %d failed; %s] %s",
                 states.count("RUNNING") + states.count("PAUSED"), states.count("PENDING"), len(ended) - early,
                 early, states.count("ERROR"), best, event)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._log(trials, f"{trial.trial_id} started: {format_params(trial.config)}", trial, "RUNNING")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        self._consider(value, trial.trial_id)
        shown = f"{value:.4f}" if value is not None else "-"
        self._log(trials, f"{trial.trial_id} epoch {result.get('epoch')}: {self.metric} {shown}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        epochs = (trial.last_result or {}).get("epoch", 0)
        verb = "finished" if epochs >= self.max_t else "stopped early"
        self._log(trials, f"{trial.trial_id} {verb} after {epochs} epoch(s)", trial, "TERMINATED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).is_file() else ""
        self._log(trials, f"{trial.trial_id} failed: {failure_reason(error)}", trial, "ERROR")


class EpochsToTune(TuneReportCallback):
    """Tune's report callback, minus a run's final `stopped` report: it has no metric for the
    scheduler; the trial fails with the reason instead (the training run raises RunStopped)."""

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if "stopped" not in metrics[0]:
            super().after_report(run_context, metrics, checkpoint)
