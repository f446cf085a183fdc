"""An experiment spec: a YAML file read into typed, checked dataclasses, with no Ray involved.

A spec names the training options every trial shares (`base`, a TrainConfig
built as a --config file is: flat, dotted or sectioned keys), the options
searched (`space`, by dotted path such as `loss.kl_coeff`; the flat names
`asciiray train` uses are accepted too), the search, the scheduler, the metric
and each trial's resources. Every mistake is a one-line UserError naming the
key, raised before any cluster starts.

The experiment keeps its spec beside Ray's own files (SPEC_FILE), so it reads
back on its own, and a resumed experiment can be checked against it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asciiray import config, metrics, storage
from asciiray.config import option
from asciiray.errors import UserError
from asciiray.train.options import BUDGET_PATHS, TrainConfig, is_runtime

# The experiment's layout in its directory <storage_path>/<name>: the spec, then one training run per trial.
SPEC_FILE = "asciiray-tune.json"
TRIAL_PREFIX = "trial_"
RUN_NAME = "train"

# The terms of `losses.compute_losses`, each minimised.
LOSS_TERMS = ("loss", "ce", "kl", "image")
# The metrics a spec may optimise, and their natural mode: the loss terms and every metric of
# `asciiray.metrics` that has a best direction, on either split.
METRICS: dict[str, str] = {
    f"{split}/{name}": mode
    for split in ("val", "train")
    for name, mode in [*((term, "min") for term in LOSS_TERMS), *metrics.BETTER.items()] if mode
}
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")
SEARCHES = ("random", "grid", "optuna")
# Set by the experiment for every trial (where it is stored) or by the spec's `resources`: not base keys.
MANAGED_PATHS = frozenset({"checkpoint.storage_path", "checkpoint.run_name", "checkpoint.resume",
                           "resources.address", "resources.num_workers", "resources.cpus_per_worker",
                           "resources.gpus_per_worker", "resources.use_gpu"})
# Local paths among the training options, made absolute: a trial runs in a directory of its own.
LOCAL_PATHS = ("data.corpus", "loss.renderer")
# A trial's epochs when neither the base's n_epochs nor the scheduler's max_t says (train's -n default of before).
TRIAL_EPOCHS = 10
TOP_KEYS = ("name", "storage_path", "base", "space", "search", "scheduler", "metric", "mode", "num_samples",
            "max_concurrent", "resources", "search_seed")


def searchable(path: str) -> bool:
    """False for what sets where, on how much or how long a trial runs (the scheduler owns the length)."""
    return not (is_runtime(path) or path in BUDGET_PATHS or path.startswith("checkpoint."))


@dataclass(frozen=True)
class Distribution:
    """How one searched training option is drawn: loguniform, uniform (floats in [low, high]), randint
    (integers in [low, high)), choice (one of values at random) or grid (every one of values)."""

    type: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()

    def to_dict(self) -> dict[str, Any]:
        if self.values:
            return {"type": self.type, "values": list(self.values)}
        return {"type": self.type, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Scheduler:
    """When trials stop: ASHA compares them at rungs of grace_period * reduction_factor**k epochs."""

    type: str = option("asha", "asha: stop the worse trials at each rung; none: run every trial to the end",
                       choices=("asha", "none", "pbt"))
    grace_period: int = option(1, "epochs every trial runs before it can be stopped")
    reduction_factor: float = option(2.0, "keep about 1/reduction_factor of the trials at each rung")
    max_t: int | None = option(None, "epochs of the longest trial (default: the base n_epochs; a base without "
                                     "n_epochs trains max_t epochs, or 10 without max_t)")


@dataclass(frozen=True)
class Resources:
    """What each trial's TorchTrainer asks for; the trial itself only holds a sliver of a CPU."""

    num_workers: int = option(1, "Ray Train workers (DDP processes) per trial")
    cpus_per_worker: float = option(1.0, "CPUs reserved per worker (fractions allowed)")
    gpus_per_worker: float = option(0.0, "GPUs per worker; a fraction lets trials share a GPU (0: CPU)")

    def config_values(self) -> dict[str, Any]:
        """The same, as the training config's resources (by dotted path)."""
        return {"resources.num_workers": self.num_workers, "resources.cpus_per_worker": self.cpus_per_worker,
                "resources.use_gpu": self.gpus_per_worker > 0, "resources.gpus_per_worker": self.gpus_per_worker or 1.0}


@dataclass(frozen=True)
class Spec:
    """An experiment: what every trial trains, what is searched, how, and where it is stored."""

    name: str
    storage_path: str
    base: TrainConfig
    base_keys: tuple[str, ...]
    space: dict[str, Distribution]
    search: str
    scheduler: Scheduler
    metric: str
    mode: str
    num_samples: int
    max_concurrent: int | None
    resources: Resources
    search_seed: int | None

    @property
    def uri(self) -> str:
        """The experiment directory (local path or s3:// URI)."""
        return storage.join(self.storage_path, self.name)

    @property
    def max_t(self) -> int:
        return self.scheduler.max_t or self.base.optim.n_epochs

    def to_dict(self) -> dict[str, Any]:
        """The spec as SPEC_FILE stores it: the base keys it set (dotted), the space by dotted path."""
        return {"name": self.name, "storage_path": self.storage_path,
                "base": {path: value_at(self.base, path) for path in self.base_keys},
                "space": {path: d.to_dict() for path, d in self.space.items()}, "search": self.search,
                "scheduler": config.to_dict(self.scheduler), "metric": self.metric, "mode": self.mode,
                "num_samples": self.num_samples, "max_concurrent": self.max_concurrent,
                "resources": config.to_dict(self.resources), "search_seed": self.search_seed}


def value_at(cfg: Any, path: str) -> Any:
    """The value of a dotted path (`loss.kl_coeff`) of a config."""
    return functools.reduce(getattr, path.split("."), cfg)


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

    resources = _section(Resources, values.get("resources") or {}, f"{source}: resources")
    if resources.num_workers < 1 or resources.cpus_per_worker <= 0 or resources.gpus_per_worker < 0:
        raise UserError(f"{source}: resources need num_workers >= 1, cpus_per_worker > 0 and gpus_per_worker >= 0")
    scheduler = _section(Scheduler, values.get("scheduler", "asha"), f"{source}: scheduler")
    if scheduler.max_t == 0:  # spec files of before said 0 for "the base n_epochs"
        scheduler = dataclasses.replace(scheduler, max_t=None)
    base, given = _base(values.get("base"), resources, f"{source}: base")
    base = _epoch_budget(base, scheduler.max_t, f"{source}: base")
    space = _space(values.get("space"), base, given, source)

    search = str(values.get("search", "random"))
    if search not in SEARCHES:
        raise UserError(f"{source}: search '{search}' is unknown; use one of {', '.join(SEARCHES)}")
    for path, dist in space.items():
        if search == "grid" and dist.type not in ("grid", "choice"):
            raise UserError(f"{source}: search: grid needs every space entry to be grid or choice "
                            f"('{path}' is {dist.type}); use search: random for distributions")
        if search == "optuna" and dist.type == "grid":
            raise UserError(f"{source}: search: optuna picks its own values; make '{path}' a choice, not a grid")

    metric = str(values.get("metric", "val/loss"))
    if metric not in METRICS:
        raise UserError(f"{source}: unknown metric '{metric}'; use one of {', '.join(METRICS)}")
    mode = str(values.get("mode", METRICS[metric]))
    if mode not in ("min", "max"):
        raise UserError(f"{source}: mode '{mode}' must be min or max")

    if scheduler.type == "pbt":
        raise UserError(f"{source}: scheduler: pbt is not supported: a trial keeps its checkpoints in its own "
                        f"training run, which PBT cannot clone between trials; use asha or none")
    num_samples = _count(values.get("num_samples", 1), f"{source}: num_samples", minimum=1)
    # 0 or no value: as many trials at once as the cluster holds.
    max_concurrent = _count(values.get("max_concurrent") or 0, f"{source}: max_concurrent", minimum=0) or None
    search_seed = values.get("search_seed")
    if search_seed is not None:
        search_seed = _count(search_seed, f"{source}: search_seed", minimum=0)

    spec = Spec(name=name, storage_path=storage.resolve(str(values.get("storage_path") or "./runs")), base=base,
                base_keys=tuple(given), space=space, search=search, scheduler=scheduler, metric=metric, mode=mode,
                num_samples=num_samples, max_concurrent=max_concurrent, resources=resources, search_seed=search_seed)
    n_epochs, s = base.optim.n_epochs, spec.scheduler
    if s.type == "asha" and not (1 <= s.grace_period <= spec.max_t <= n_epochs and s.reduction_factor > 1):
        raise UserError(f"{source}: scheduler needs 1 <= grace_period <= max_t <= n_epochs ({n_epochs}) and "
                        f"reduction_factor > 1 (got grace_period {s.grace_period}, max_t {spec.max_t}, "
                        f"reduction_factor {s.reduction_factor})")
    if base.log.validation_every != 1:
        raise UserError(f"{source}: base: validation_every {base.log.validation_every} leaves epochs without the "
                        f"val/ figures Tune compares trials on each epoch; leave it at 1 in a tune spec")
    return spec


def _epoch_budget(base: TrainConfig, max_t: int | None, where: str) -> TrainConfig:
    """The base with its trials' length in epochs (its n_epochs, else max_t, else TRIAL_EPOCHS): Tune compares
    trials epoch by epoch (ASHA's rungs and max_t count epochs), so a step or time budget would end trials
    off its rungs."""
    optim = base.optim
    if optim.max_steps is not None or optim.time_budget is not None:
        raise UserError(f"{where}: max_steps and time_budget cannot budget tune trials (Tune compares them epoch by "
                        f"epoch): give n_epochs instead")
    if optim.n_epochs is not None:
        return base
    return config.replace(base, n_epochs=max_t or TRIAL_EPOCHS)


def _base(value: Any, resources: Resources, where: str) -> tuple[TrainConfig, dict[str, Any]]:
    """The config every trial starts from, and the keys the spec gave (by dotted path)."""
    given = config.dotted(TrainConfig, _mapping(value, where, "a mapping of training options, e.g. {preset: small}"),
                          where)
    for path in given:
        if path in MANAGED_PATHS:
            raise UserError(f"{where}: '{path.split('.')[1]}' is set by the experiment for each trial; "
                            f"set workers and GPUs under resources, the location with storage_path")
    base = config.build(TrainConfig, {**given, **resources.config_values()}, source=where)
    return config.replace(base, **{p: _absolute(p, value_at(base, p)) for p in LOCAL_PATHS}), given


def _space(value: Any, base: TrainConfig, given: dict[str, Any], source: str) -> dict[str, Distribution]:
    """The searched options by dotted path, each value they can draw checked against the base."""
    where = f"{source}: space"
    raw = _mapping(value, where, "a mapping of training options to distributions, e.g. "
                                 "{loss.kl_coeff: {type: loguniform, low: 1e-5, high: 1e-2}}")
    if not raw:
        raise UserError(f"{where} is empty: name at least one training option to search")
    space: dict[str, Distribution] = {}
    keys: dict[str, str] = {}
    for key, entry in raw.items():
        path = _searched_path(str(key), where)
        if path in keys:
            raise UserError(f"{where}: '{keys[path]}' and '{key}' name the same option; keep one of them")
        keys[path] = str(key)
        if path in given:
            raise UserError(f"{source}: '{path}' is both in base and in space; keep it in one of them")
        space[path] = _distribution(path, entry, base, f"{where}: '{key}'")
    return space


def _absolute(path: str, value: Any) -> Any:
    """A local corpus or neural-renderer path made absolute (an s3:// URI stays as it is)."""
    if path == "data.corpus" and value:
        return storage.resolve(value)
    if path == "loss.renderer" and value.startswith("neural:"):
        return "neural:" + storage.resolve(value[len("neural:"):])
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


def _searched_path(key: str, where: str) -> str:
    """The dotted path of a space key given dotted (`loss.kl_coeff`) or flat (`kl_coeff`)."""
    index = config.leaves(TrainConfig)
    paths = {path for path, _, _ in index.values()}
    name = key.replace("-", "_")
    path = name if name in paths else index[name][0] if name in index else None
    if path is None:
        raise UserError(f"{where}: '{key}' is not a training option; searchable keys: "
                        f"{', '.join(sorted(p for p in paths if searchable(p)))}")
    if not searchable(path):
        raise UserError(f"{where}: '{key}' cannot be searched (it sets where, on how much or how long a trial "
                        f"runs); put it in base, resources or the scheduler")
    return path


def _distribution(path: str, entry: Any, base: TrainConfig, where: str) -> Distribution:
    """A space entry, each value it can draw checked against the base config."""
    entry = _mapping(entry, where, "a mapping like {type: loguniform, low: 1e-4, high: 1e-1}")
    for k in entry:
        if k not in ("type", "low", "high", "values"):
            raise UserError(f"{where}: unknown key '{k}'; use type, low, high or values")
    kind = entry.get("type")
    if kind not in DISTRIBUTIONS:
        raise UserError(f"{where}: type {kind!r} is unknown; use one of {', '.join(DISTRIBUTIONS)}")

    def checked(value: Any) -> Any:
        return _absolute(path, value_at(config.build(TrainConfig, {path: value}, source=where, base=base), path))

    if kind in ("choice", "grid"):
        values = entry.get("values")
        if "low" in entry or "high" in entry or not isinstance(values, list) or not values:
            raise UserError(f"{where}: {kind} needs a non-empty list of values (and no low/high)")
        return Distribution(kind, values=tuple(checked(v) for v in values))
    low, high = entry.get("low"), entry.get("high")
    if "values" in entry or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise UserError(f"{where}: {kind} needs numbers low and high (and no values)")
    tp = config.value_type(config.leaves(TrainConfig)[path.split(".")[1]][2])
    if tp is not (int if kind == "randint" else float):
        if tp in (int, float):
            hint = "randint or choice" if tp is int else "uniform or loguniform"
            raise UserError(f"{where} is {tp.__name__}-valued: use {hint}, not {kind}")
        raise UserError(f"{where} is not a number: use choice or grid, not {kind}")
    if low >= high:
        raise UserError(f"{where}: low ({low}) must be below high ({high})")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"{where}: loguniform needs 0 < low < high (got low {low})")
    checked(low)
    checked(high - 1 if kind == "randint" else high)
    return Distribution(kind, low=float(low), high=float(high))
