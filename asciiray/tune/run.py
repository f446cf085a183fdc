"""Running (or resuming) an experiment: a `ray.tune.Tuner` whose trials are `asciiray train` runs.

A trial is the very training run `asciiray train` makes (`asciiray.train.vae.train`),
stored in the trial's own directory of the experiment, so its checkpoints,
TensorBoard events and resuming behave exactly as a single run's do. Each trial
gets the spec's base TrainConfig itself and lays its sampled values over it by
dotted path. The driver is a Tuner whose storage is the experiment directory
`<storage_path>/<name>`.

Ray is imported inside the functions that need it: everything that can be
checked is checked before any cluster starts.

Tune pickles `trial`, `_trial_dirname` and the callbacks (asciiray.tune.callbacks)
into the experiment by name: renaming or moving them makes the experiments
already stored unreadable (results.written_by_older_version says so).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path
from typing import Any

from asciiray import config, storage
from asciiray.errors import UserError
from asciiray.train.job import RUN_FILE, run_uri
from asciiray.train.options import TrainConfig
from asciiray.tune import results
from asciiray.tune.spec import RUN_NAME, SPEC_FILE, TRIAL_PREFIX, Distribution, Spec, spec_from_dict

log = logging.getLogger(__name__)

# A trial only waits on its TorchTrainer; the trainer's workers reserve their own resources.
TRIAL_CPUS = 0.01
# CPUs left free by the default concurrency, for the Ray Data tasks that feed the workers.
DATA_CPUS = 1.0


def run(spec: Spec, resume: bool = False, address: str | None = None) -> results.Experiment:
    """Run (or, with `resume`, continue) the experiment; returns what it recorded.

    Everything that can be checked is checked before the first trial starts. A failing trial
    (e.g. its loss stays non-finite) ends as failed with its reason; the others go on. Progress
    is logged (asciiray.tune.callbacks) after every trial event.
    """
    from asciiray.runtime import ensure_ray

    _check_runnable(spec, resume)
    ensure_ray(address)
    import ray.tune

    from asciiray.tune.callbacks import Progress

    fs, path = storage.for_ray(spec.uri)
    trainable = ray.tune.with_resources(ray.tune.with_parameters(trial, base=spec.base, experiment=spec.uri),
                                        {"cpu": TRIAL_CPUS})
    if resume:
        if not ray.tune.Tuner.can_restore(path, storage_filesystem=fs):
            raise UserError(f"experiment {spec.uri} stopped before its first trial was recorded: "
                            f"start it again under another --name")
        try:
            tuner = ray.tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                                           storage_filesystem=fs)
        except (AttributeError, ImportError) as exc:
            raise results.written_by_older_version(spec.uri, exc) from None
    else:
        storage.write_bytes(storage.join(spec.uri, SPEC_FILE), json.dumps(spec.to_dict(), indent=2).encode())
        tuner = ray.tune.Tuner(
            trainable,
            param_space={p: _to_tune(d, spec.search) for p, d in spec.space.items()},
            tune_config=ray.tune.TuneConfig(
                metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
                search_alg=_search_alg(spec), scheduler=_scheduler(spec), trial_dirname_creator=_trial_dirname),
            run_config=ray.tune.RunConfig(
                name=spec.name, storage_path=storage.for_ray(spec.storage_path)[1], storage_filesystem=fs,
                callbacks=[Progress(spec.metric, spec.mode, spec.max_t)], verbose=0),
        )
    tuner.fit()
    return results.read(spec.uri)


def trial(params: dict[str, Any], base: TrainConfig, experiment: str) -> None:
    """One trial: `asciiray train` with the trial's values (by dotted path), stored in the trial's directory.

    When the driver is resumed, a trial that had started continues its run from the run's
    latest checkpoint instead of training from scratch.
    """
    import ray.tune

    from asciiray.train import vae
    from asciiray.tune.callbacks import EpochsToTune

    trial_dir = storage.join(experiment, Path(ray.tune.get_context().get_trial_dir()).name)
    started = storage.exists(storage.join(run_uri(trial_dir, RUN_NAME), RUN_FILE))
    cfg = config.replace(base, **params, **{"checkpoint.storage_path": trial_dir, "checkpoint.run_name": RUN_NAME,
                                            "checkpoint.resume": started})
    vae.train(cfg, callbacks=[EpochsToTune()])


def _check_runnable(spec: Spec, resume: bool) -> None:
    """Driver-side checks (model preset, corpus, storage, the experiment's existence)."""
    from asciiray import data
    from asciiray.models import get_preset

    if spec.search == "optuna" and importlib.util.find_spec("optuna") is None:
        raise UserError("search: optuna needs the optuna package: pip install 'asciiray[tune]'")
    cfg = spec.base
    presets = spec.space["model.preset"].values if "model.preset" in spec.space else (cfg.model.preset,)
    corpus_uri, max_pieces = data.source(cfg.data.corpus, cfg.data.max_pieces)
    for preset in presets:
        data.plan(corpus_uri, get_preset(preset).grid, cfg.data.validation_prop, max_pieces)
    storage.check_writable(spec.storage_path, "storage_path")
    stored = storage.join(spec.uri, SPEC_FILE)
    if resume:
        if not storage.exists(stored):
            raise UserError(f"no experiment to resume at {spec.uri}: check the spec's storage_path and name")
        before = spec_from_dict(json.loads(storage.read_bytes(stored)), source=stored, default_name=spec.name)
        was, now = _plain(before.to_dict()), _plain(spec.to_dict())
        changed = [k for k in now if k != "storage_path" and now[k] != was[k]]
        if changed:
            raise UserError(f"experiment {spec.uri} was started with another '{changed[0]}'; a resumed "
                            f"experiment keeps its spec (restore the spec or start a new experiment with --name)")
    elif storage.exists(stored):
        raise UserError(f"experiment {spec.uri} already exists: pass --resume to continue it, "
                        f"or choose another name (--name)")


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """JSON's view of a spec (tuples as lists), to compare a spec with the one stored."""
    return json.loads(json.dumps(values))


def _to_tune(dist: Distribution, search: str) -> Any:
    from ray import tune

    if dist.type == "loguniform":
        return tune.loguniform(dist.low, dist.high)
    if dist.type == "uniform":
        return tune.uniform(dist.low, dist.high)
    if dist.type == "randint":
        return tune.randint(int(dist.low), int(dist.high))
    if dist.type == "grid" or search == "grid":
        return tune.grid_search(list(dist.values))
    return tune.choice(list(dist.values))


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
    if spec.max_concurrent and spec.max_concurrent > fit:
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
    return f"{TRIAL_PREFIX}{trial.trial_id}"
