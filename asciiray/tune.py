"""Ray Tune searches over the training coefficients, described by a YAML spec.

A trial is the very training run `asciiray train` makes (`asciiray.train.vae.train`),
stored in the trial's own directory of the experiment, so its checkpoints,
TensorBoard events and resuming behave exactly as a single run's do. The driver
is a `ray.tune.Tuner` whose storage is the experiment directory
`<storage_path>/<name>`; the spec is saved there too, so an experiment (finished
or not, local or S3) reads back on its own into one row per trial.

Ray is imported inside the functions that need it: a spec is checked before
any cluster starts.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import logging
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asciiray import config, storage
from asciiray.config import option
from asciiray.errors import UserError
from asciiray.train.options import RUNTIME_KEYS, TrainConfig

log = logging.getLogger(__name__)

SPEC_FILE = "asciiray-tune.json"
RUN_NAME = "train"
# A trial only waits on its TorchTrainer; the trainer's workers reserve their own resources.
TRIAL_CPUS = 0.01
# CPUs left free by the default concurrency, for the Ray Data tasks that feed the workers.
DATA_CPUS = 1.0

METRICS: dict[str, str] = {
    f"{split}/{name}": mode
    for split in ("val", "train")
    for name, mode in (("loss", "min"), ("ce", "min"), ("kl", "min"), ("image", "min"), ("char_acc", "max"),
                       ("nonspace_acc", "max"), ("ink_recall", "max"), ("ink_precision", "max"), ("ink_f1", "max"),
                       ("near_collapse", "min"), ("space_collapse", "min"))
}
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")
SEARCHES = ("random", "grid", "optuna")
# Set by the experiment for every trial, or by the `resources` section: not base keys.
MANAGED_KEYS = frozenset({"storage_path", "run_name", "resume", "address", "num_workers", "cpus_per_worker",
                          "gpus_per_worker", "use_gpu"})
UNSEARCHABLE_KEYS = RUNTIME_KEYS | MANAGED_KEYS | {"n_epochs"}
TOP_KEYS = ("name", "storage_path", "base", "space", "search", "scheduler", "metric", "mode", "num_samples",
            "max_concurrent", "resources", "search_seed")


@dataclass(frozen=True)
class Distribution:
    """How one searched training option is drawn: loguniform, uniform (floats in [low, high]), randint
    (integers in [low, high)), choice (one of values at random) or grid (every one of values)."""

    type: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()

    def to_tune(self, search: str) -> Any:
        from ray import tune

        if self.type == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.type == "uniform":
            return tune.uniform(self.low, self.high)
        if self.type == "randint":
            return tune.randint(int(self.low), int(self.high))
        if self.type == "grid" or search == "grid":
            return tune.grid_search(list(self.values))
        return tune.choice(list(self.values))


@dataclass(frozen=True)
class Scheduler:
    """When trials stop: ASHA compares them at rungs of grace_period * reduction_factor**k epochs."""

    type: str = option("asha", "asha: stop the worse trials at each rung; none: run every trial to the end",
                       choices=("asha", "none", "pbt"))
    grace_period: int = option(1, "epochs every trial runs before it can be stopped")
    reduction_factor: float = option(2.0, "keep about 1/reduction_factor of the trials at each rung")
    max_t: int = option(0, "epochs of the longest trial (0: the base n_epochs)")


@dataclass(frozen=True)
class Resources:
    """What each trial's TorchTrainer asks for; the trial itself only holds TRIAL_CPUS."""

    num_workers: int = option(1, "Ray Train workers (DDP processes) per trial")
    cpus_per_worker: float = option(1.0, "CPUs reserved per worker (fractions allowed)")
    gpus_per_worker: float = option(0.0, "GPUs per worker; a fraction lets trials share a GPU (0: CPU)")


@dataclass(frozen=True)
class Spec:
    """An experiment: what every trial trains, what is searched, how, and where it is stored."""

    name: str
    storage_path: str
    base: dict[str, Any]
    space: dict[str, Distribution]
    search: str
    scheduler: Scheduler
    metric: str
    mode: str
    num_samples: int
    max_concurrent: int
    resources: Resources
    search_seed: int | None

    @property
    def uri(self) -> str:
        """The experiment directory (local path or s3:// URI)."""
        return storage.join(self.storage_path, self.name)

    def train_config(self) -> TrainConfig:
        """The options every trial shares, before its coefficients are filled in."""
        r = self.resources
        return TrainConfig(**self.base, num_workers=r.num_workers, cpus_per_worker=r.cpus_per_worker,
                           use_gpu=r.gpus_per_worker > 0, gpus_per_worker=r.gpus_per_worker or 1.0)

    @property
    def max_t(self) -> int:
        return self.scheduler.max_t or self.train_config().n_epochs

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["space"] = {k: {"type": v.type, **({"values": list(v.values)} if v.values else
                                              {"low": v.low, "high": v.high})} for k, v in self.space.items()}
        return d


def _train_fields() -> dict[str, type]:
    """Each training option's value type (`bool | None` -> bool)."""
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: next((a for a in typing.get_args(hints[f.name]) if a is not type(None)), hints[f.name])
            for f in dataclasses.fields(TrainConfig)}


def load_spec(path: str, name: str | None = None, storage_path: str | None = None) -> Spec:
    """Read and check a YAML spec; `name` and `storage_path` override the file's."""
    values = config.read_file(path)
    if name:
        values["name"] = name
    if storage_path:
        values["storage_path"] = storage_path
    return spec_from_dict(values, source=str(path), default_name=Path(path).stem)


def spec_from_dict(values: dict[str, Any], source: str, default_name: str) -> Spec:
    """A Spec from a mapping; every mistake is a one-line UserError naming the key, raised here."""
    for key in values:
        if key not in TOP_KEYS:
            raise UserError(f"{source}: unknown key '{key}'; known keys: {', '.join(TOP_KEYS)}")
    name = str(values.get("name") or default_name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"{source}: name '{name}' must be a plain directory name (letters, digits, . _ -)")

    base = _mapping(values.get("base"), f"{source}: base", "a mapping of training options, e.g. {preset: small}")
    for key in base:
        if key.replace("-", "_") in MANAGED_KEYS:
            raise UserError(f"{source}: base: '{key}' is set by the experiment for each trial; "
                            f"set workers and GPUs under resources, the location with storage_path")
    built = config.build(TrainConfig, base, source=f"{source}: base")
    base = {k.replace("-", "_"): _absolute(k.replace("-", "_"), getattr(built, k.replace("-", "_"))) for k in base}

    raw_space = _mapping(values.get("space"), f"{source}: space",
                         "a mapping of training options to distributions, e.g. "
                         "{kl_coeff: {type: loguniform, low: 1e-5, high: 1e-2}}")
    if not raw_space:
        raise UserError(f"{source}: space is empty: name at least one training option to search")
    space = {key.replace("-", "_"): _distribution(key, entry, f"{source}: space")
             for key, entry in raw_space.items()}
    for key in space:
        if key in base:
            raise UserError(f"{source}: '{key}' is both in base and in space; keep it in one of them")

    search = str(values.get("search", "random"))
    if search not in SEARCHES:
        raise UserError(f"{source}: search '{search}' is unknown; use one of {', '.join(SEARCHES)}")
    for key, dist in space.items():
        if search == "grid" and dist.type not in ("grid", "choice"):
            raise UserError(f"{source}: search: grid needs every space entry to be grid or choice "
                            f"('{key}' is {dist.type}); use search: random for distributions")
        if search == "optuna" and dist.type == "grid":
            raise UserError(f"{source}: search: optuna picks its own values; make '{key}' a choice, not a grid")

    metric = str(values.get("metric", "val/loss"))
    if metric not in METRICS:
        raise UserError(f"{source}: unknown metric '{metric}'; use one of {', '.join(METRICS)}")
    mode = str(values.get("mode", METRICS[metric]))
    if mode not in ("min", "max"):
        raise UserError(f"{source}: mode '{mode}' must be min or max")

    scheduler = _section(Scheduler, values.get("scheduler", "asha"), f"{source}: scheduler")
    if scheduler.type == "pbt":
        raise UserError(f"{source}: scheduler: pbt is not supported: a trial keeps its checkpoints in its own "
                        f"training run, which PBT cannot clone between trials; use asha or none")
    resources = _section(Resources, values.get("resources") or {}, f"{source}: resources")
    if resources.num_workers < 1 or resources.cpus_per_worker <= 0 or resources.gpus_per_worker < 0:
        raise UserError(f"{source}: resources need num_workers >= 1, cpus_per_worker > 0 and gpus_per_worker >= 0")

    num_samples = _count(values.get("num_samples", 1), f"{source}: num_samples", minimum=1)
    max_concurrent = _count(values.get("max_concurrent") or 0, f"{source}: max_concurrent", minimum=0)
    search_seed = values.get("search_seed")
    if search_seed is not None:
        search_seed = _count(search_seed, f"{source}: search_seed", minimum=0)
    storage_path = str(values.get("storage_path") or "./runs")
    storage_path = storage_path if storage.is_s3(storage_path) else storage.filesystem(storage_path)[1]

    spec = Spec(name=name, storage_path=storage_path, base=base, space=space, search=search,
                scheduler=scheduler, metric=metric, mode=mode, num_samples=num_samples,
                max_concurrent=max_concurrent, resources=resources, search_seed=search_seed)
    n_epochs = spec.train_config().n_epochs
    s = spec.scheduler
    if s.type == "asha" and not (1 <= s.grace_period <= spec.max_t <= n_epochs and s.reduction_factor > 1):
        raise UserError(f"{source}: scheduler needs 1 <= grace_period <= max_t <= n_epochs ({n_epochs}) and "
                        f"reduction_factor > 1 (got grace_period {s.grace_period}, max_t {spec.max_t}, "
                        f"reduction_factor {s.reduction_factor})")
    return spec


def _absolute(key: str, value: Any) -> Any:
    """Local corpus and neural-renderer paths made absolute: a trial runs in a directory of its own."""
    if key == "corpus" and value and not storage.is_s3(value):
        return storage.filesystem(value)[1]
    if key == "renderer" and value.startswith("neural:") and not storage.is_s3(value[len("neural:"):]):
        return "neural:" + storage.filesystem(value[len("neural:"):])[1]
    return value


def _mapping(value: Any, where: str, example: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where} must be {example}")
    return value


def _count(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{where} = {value!r} must be an integer >= {minimum}")
    return value


def _section(cls: type, value: Any, where: str) -> Any:
    if isinstance(value, str):
        value = {"type": value}
    return config.build(cls, _mapping(value, where, "a mapping"), source=where)


def _distribution(key: str, entry: Any, where: str) -> Distribution:
    name = key.replace("-", "_")
    fields = _train_fields()
    if name not in fields:
        raise UserError(f"{where}: '{key}' is not a training option; searchable keys: "
                        f"{', '.join(k for k in fields if k not in UNSEARCHABLE_KEYS)}")
    if name in UNSEARCHABLE_KEYS:
        raise UserError(f"{where}: '{key}' cannot be searched (it sets where or how long a trial runs); "
                        f"put it in base, resources or the scheduler")
    entry = _mapping(entry, f"{where}: '{key}'", "a mapping like {type: loguniform, low: 1e-4, high: 1e-1}")
    for k in entry:
        if k not in ("type", "low", "high", "values"):
            raise UserError(f"{where}: '{key}': unknown key '{k}'; use type, low, high or values")
    kind = entry.get("type")
    if kind not in DISTRIBUTIONS:
        raise UserError(f"{where}: '{key}': type {kind!r} is unknown; use one of {', '.join(DISTRIBUTIONS)}")
    tp = fields[name]
    if kind in ("choice", "grid"):
        values = entry.get("values")
        if "low" in entry or "high" in entry or not isinstance(values, list) or not values:
            raise UserError(f"{where}: '{key}': {kind} needs a non-empty list of values (and no low/high)")
        checked = tuple(_absolute(name, getattr(config.build(TrainConfig, {name: v}, source=f"{where}: '{key}'"),
                                                name)) for v in values)
        return Distribution(kind, values=checked)
    low, high = entry.get("low"), entry.get("high")
    if "values" in entry or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise UserError(f"{where}: '{key}': {kind} needs numbers low and high (and no values)")
    wanted = int if kind == "randint" else float
    if tp is not wanted:
        hint = "randint or choice" if tp is int else ("uniform or loguniform" if tp is float else "choice or grid")
        raise UserError(f"{where}: '{key}' is {tp.__name__}-valued: use {hint}, not {kind}")
    if low >= high:
        raise UserError(f"{where}: '{key}': low ({low}) must be below high ({high})")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"{where}: '{key}': loguniform needs 0 < low < high (got low {low})")
    return Distribution(kind, low=float(low), high=float(high))


# ---------------------------------------------------------------------------------------------------------------
# Running an experiment


@dataclass(frozen=True)
class Snapshot:
    """Where an experiment stands, sent to the progress callback after every trial event."""

    running: int
    pending: int
    done: int
    stopped_early: int
    failed: int
    metric: str
    best: float | None
    best_trial: str | None
    event: str

    def line(self) -> str:
        best = f"best {self.metric} {self.best:.4f} ({self.best_trial})" if self.best is not None else "no result yet"
        return (f"[{self.running} running, {self.pending} pending, {self.done} done, "
                f"{self.stopped_early} stopped early, {self.failed} failed; {best}] {self.event}")


# Progress sinks of the experiments running in this process, by experiment URI. Ray pickles the Tuner's
# callbacks with the experiment and brings them back on --resume; the sink itself stays here.
_SINKS: dict[str, Callable[[Snapshot], None]] = {}


def _sink_for(uri: str) -> Callable[[Snapshot], None] | None:
    """A module-level lookup on purpose: cloudpickle copies the globals of the (local) callback class
    by value, so a restored callback reading `_SINKS` directly would see the empty dict of pickling time."""
    return _SINKS.get(uri)


def run(spec: Spec, resume: bool = False, progress: Callable[[Snapshot], None] | None = None,
        address: str | None = None) -> Experiment:
    """Run (or, with `resume`, continue) the experiment; returns what it recorded.

    Everything that can be checked is checked before the first trial starts. A failing
    trial (e.g. its loss stays non-finite) ends as failed with its reason; the others go on.
    """
    from asciiray.runtime import ensure_ray

    _check_runnable(spec, resume)
    ensure_ray(address)
    import ray.tune

    fs, path = storage.filesystem(spec.uri)
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_trial, base=dataclasses.asdict(spec.train_config()), experiment=spec.uri),
        {"cpu": TRIAL_CPUS})
    if resume:
        if not ray.tune.Tuner.can_restore(path, storage_filesystem=fs):
            raise UserError(f"experiment {spec.uri} stopped before its first trial was recorded: "
                            f"start it again under another --name")
        tuner = ray.tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                                       storage_filesystem=fs)
    else:
        storage.write_bytes(storage.join(spec.uri, SPEC_FILE), json.dumps(spec.to_dict(), indent=2).encode())
        tuner = ray.tune.Tuner(
            trainable,
            param_space={k: d.to_tune(spec.search) for k, d in spec.space.items()},
            tune_config=ray.tune.TuneConfig(
                metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
                search_alg=_search_alg(spec), scheduler=_scheduler(spec), trial_dirname_creator=_trial_dirname),
            run_config=ray.tune.RunConfig(
                name=spec.name, storage_path=storage.filesystem(spec.storage_path)[1], storage_filesystem=fs,
                callbacks=[_progress_callback(spec)], verbose=0),
        )
    _SINKS[spec.uri] = progress or (lambda snapshot: None)
    try:
        tuner.fit()
    finally:
        _SINKS.pop(spec.uri, None)
    return read(spec.uri)


def _check_runnable(spec: Spec, resume: bool) -> None:
    """Driver-side checks (model preset, corpus, storage, the experiment's existence)."""
    from asciiray import data
    from asciiray.models import get_preset

    if spec.search == "optuna" and importlib.util.find_spec("optuna") is None:
        raise UserError("search: optuna needs the optuna package: pip install 'asciiray[tune]'")
    cfg = spec.train_config()
    presets = spec.space["preset"].values if "preset" in spec.space else (cfg.preset,)
    corpus_uri, max_pieces = data.source(cfg.corpus, cfg.max_pieces)
    for preset in presets:
        data.plan(corpus_uri, get_preset(preset).grid, cfg.validation_prop, max_pieces)
    storage.check_writable(spec.storage_path)
    stored = storage.join(spec.uri, SPEC_FILE)
    if resume:
        if not storage.exists(stored):
            raise UserError(f"no experiment to resume at {spec.uri}: check the spec's storage_path and name")
        before = json.loads(storage.read_bytes(stored))
        now = spec.to_dict()
        changed = [k for k in now if k != "storage_path" and json.loads(json.dumps(now[k])) != before.get(k)]
        if changed:
            raise UserError(f"experiment {spec.uri} was started with another '{changed[0]}'; a resumed "
                            f"experiment keeps its spec (restore the spec or start a new experiment with --name)")
    elif storage.exists(stored):
        raise UserError(f"experiment {spec.uri} already exists: pass --resume to continue it, "
                        f"or choose another name (--name)")


def _concurrency(spec: Spec) -> int:
    """The spec's max_concurrent, else as many trials as the cluster's CPUs (and GPUs) hold at once.

    DATA_CPUS stay free: Ray Data's read tasks ask for a whole CPU, and trials whose workers take
    every core would wait on their data forever.
    """
    import ray

    total = ray.cluster_resources()
    r = spec.resources
    fits = [(total.get("CPU", 0.0) - DATA_CPUS) / (r.num_workers * r.cpus_per_worker + TRIAL_CPUS)]
    if r.gpus_per_worker:
        fits.append(total.get("GPU", 0.0) / (r.num_workers * r.gpus_per_worker))
    fit = max(1, math.floor(min(fits) + 1e-9))
    if spec.max_concurrent > fit:
        log.warning("max_concurrent %d is more trials than this cluster holds at once (%d, leaving %g CPU for "
                    "data loading); the extra trials may wait on each other", spec.max_concurrent, fit, DATA_CPUS)
    return spec.max_concurrent or fit


def _search_alg(spec: Spec) -> Any:
    concurrency = _concurrency(spec)
    if spec.search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=spec.search_seed), max_concurrent=concurrency)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=spec.search_seed, max_concurrent=concurrency)


def _scheduler(spec: Spec) -> Any:
    if spec.scheduler.type == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    s = spec.scheduler
    return ASHAScheduler(time_attr="epoch", max_t=spec.max_t, grace_period=s.grace_period,
                         reduction_factor=s.reduction_factor)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _trial(config: dict[str, Any], base: dict[str, Any], experiment: str) -> None:
    """One trial: `asciiray train` with the trial's coefficients, stored in the trial's directory.

    When the driver is resumed, a trial that had started continues its run from the run's
    latest checkpoint instead of training from scratch.
    """
    import ray.tune

    from asciiray.train import runner, vae

    trial_dir = storage.join(experiment, Path(ray.tune.get_context().get_trial_dir()).name)
    started = storage.exists(storage.join(trial_dir, RUN_NAME, runner.RUN_FILE))
    cfg = TrainConfig(**{**base, **config, "storage_path": trial_dir, "run_name": RUN_NAME, "resume": started})
    vae.train(cfg, callbacks=[_epochs_to_tune()])


def _epochs_to_tune() -> Any:
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochsToTune(TuneReportCallback):
        """Tune's report callback, minus a run's final `stopped` report: it has no metric for the
        scheduler; the trial fails with the reason instead (vae.train raises RunStopped)."""

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            if "stopped" not in metrics[0]:
                super().after_report(run_context, metrics, checkpoint)

    return EpochsToTune()


def _progress_callback(spec: Spec) -> Any:
    from ray.tune import Callback

    uri, metric, mode, n_epochs = spec.uri, spec.metric, spec.mode, spec.max_t

    class Progress(Callback):
        """Counts trials by state and tracks the best result, for the sink of this experiment."""

        def __init__(self) -> None:
            self.best: float | None = None
            self.best_trial: str | None = None

        def _consider(self, value: Any, trial_id: str) -> None:
            if isinstance(value, (int, float)) and math.isfinite(value) and (
                    self.best is None or (value < self.best if mode == "min" else value > self.best)):
                self.best, self.best_trial = value, trial_id

        def _send(self, trials: list[Any], event: str, ending: Any = None, status: str = "") -> None:
            """Tune calls the trial hooks before it updates the trial's status: `ending` gets `status` here."""
            sink = _sink_for(uri)
            if sink is None:
                return
            for t in trials:  # a resumed experiment's earlier results count too
                self._consider((t.last_result or {}).get(metric), t.trial_id)
            states = [status if t is ending else t.status for t in trials]
            ended = [t for t, s in zip(trials, states) if s == "TERMINATED"]
            early = sum(1 for t in ended if (t.last_result or {}).get("epoch", 0) < n_epochs)
            sink(Snapshot(running=states.count("RUNNING") + states.count("PAUSED"), pending=states.count("PENDING"),
                          done=len(ended) - early, stopped_early=early, failed=states.count("ERROR"),
                          metric=metric, best=self.best, best_trial=self.best_trial, event=event))

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._send(trials, f"{trial.trial_id} started: {format_params(trial.config)}", trial, "RUNNING")

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            value = result.get(metric)
            self._consider(value, trial.trial_id)
            shown = f"{value:.4f}" if value is not None else "-"
            self._send(trials, f"{trial.trial_id} epoch {result.get('epoch')}: {metric} {shown}")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            epochs = (trial.last_result or {}).get("epoch", 0)
            verb = "finished" if epochs >= n_epochs else "stopped early"
            self._send(trials, f"{trial.trial_id} {verb} after {epochs} epoch(s)", trial, "TERMINATED")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            error = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).is_file() else ""
            self._send(trials, f"{trial.trial_id} failed: {failure_reason(error)}", trial, "ERROR")

    return Progress()


def format_params(values: dict[str, Any]) -> str:
    """key=value pairs of a trial's searched options, numbers to 4 significant digits."""
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------------------------
# Reading an experiment back


@dataclass(frozen=True)
class TrialRow:
    """One trial as recorded: its coefficients, its best metric and best checkpoint, how it ended."""

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
    from ray.tune import ExperimentAnalysis

    fs, path = storage.filesystem(uri)
    try:
        analysis = ExperimentAnalysis(path, storage_filesystem=fs)
    except ValueError:
        raise UserError(f"{uri}: the experiment has not recorded any trial yet") from None
    rows, frames = [], {}
    for trial in analysis.trials:
        frame = analysis.trial_dataframes.get(trial.trial_id)
        frames[trial.trial_id] = frame
        rows.append(_row(uri, spec, trial, frame))
    return Experiment(uri=uri, spec=spec, trials=rows, frames=frames)


def _row(uri: str, spec: Spec, trial: Any, frame: Any) -> TrialRow:
    """A trial's summary: the best of its reported results, and the best of its checkpoints still kept."""
    import pandas as pd

    frame = frame if frame is not None else pd.DataFrame()
    run_uri = storage.join(uri, Path(trial.path).name, RUN_NAME)
    epochs = int(frame["epoch"].max()) if "epoch" in frame and frame["epoch"].notna().any() else 0
    best = checkpoint = None
    if spec.metric in frame:
        scores = frame[spec.metric].where(frame[spec.metric].map(math.isfinite))
        if scores.notna().any():
            best = float(scores.min() if spec.mode == "min" else scores.max())
        kept = set(_checkpoint_names(run_uri))
        if best is not None and "checkpoint_path" in frame and kept:
            held = scores[frame["checkpoint_path"].map(lambda p: isinstance(p, str) and Path(p).name in kept)]
            if held.notna().any():
                pick = held.idxmin() if spec.mode == "min" else held.idxmax()
                checkpoint = storage.join(run_uri, Path(frame.loc[pick, "checkpoint_path"]).name)
    reason = ""
    if trial.status == "TERMINATED":
        status = "done" if epochs >= spec.max_t else "stopped early"
    elif trial.status == "ERROR":
        status, reason = "failed", _stop_reason(run_uri) or failure_reason(trial.get_error())
    else:  # an interrupted or unfinished experiment: a trial that never reported is still to start
        status = "unfinished" if epochs else "pending"
    return TrialRow(trial_id=trial.trial_id, params={k: trial.config.get(k) for k in spec.space}, best=best,
                    epochs=epochs, status=status, reason=reason, checkpoint=checkpoint)


def _checkpoint_names(run_uri: str) -> list[str]:
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(run_uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as exc:
        raise UserError(f"{run_uri}: {exc}") from None
    return [i.base_name for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")]


def _stop_reason(run_uri: str) -> str:
    """Why the training run stopped itself (e.g. a loss that stayed non-finite), if it did."""
    from asciiray.train.loop import STOP_FILE

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
    frames = []
    for trial_id, frame in experiment.frames.items():
        if frame is not None and len(frame):
            frames.append(frame.assign(trial_id=trial_id, status=status[trial_id]))
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
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            labels = sorted({str(x) for x in xs})
            ax.set_xticks(range(len(labels)), labels)
            xs = [labels.index(str(x)) for x in xs]
        elif dist.type == "loguniform" or (xs and min(xs) > 0 and max(xs) >= 100 * min(xs)):
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
