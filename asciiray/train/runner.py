"""Driver side of a training run: name it, check it, launch a TorchTrainer, read the result.

Shared by every training command (the VAE, the neural renderer, each Tune
trial), so storage layout, resuming and fault tolerance behave the same for
all of them. Workers get a `Job` (asciiray.train.job): the config dataclass
itself plus what the driver resolved.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from asciiray import config, corpus, data, storage
from asciiray.errors import UserError
from asciiray.runtime import ensure_ray
from asciiray.train.job import RUN_FILE, RUN_FILE_VERSION, STOP_FILE, Job, run_uri
from asciiray.train.options import BUDGET_PATHS, RunConfig, is_runtime

log = logging.getLogger(__name__)

C = TypeVar("C", bound=RunConfig)


class RunStopped(RuntimeError):
    """The run ended early for a reason the user must see (e.g. persistent non-finite loss)."""


def uri_of(cfg: RunConfig) -> str:
    return run_uri(cfg.checkpoint.storage_path, cfg.checkpoint.run_name)


def _replace(cfg: C, **sections: dict[str, Any]) -> C:
    """`cfg` with some fields of some sections replaced."""
    return dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **values)
                                       for name, values in sections.items()})


def prepare(cfg: C, kind: str, check: Callable[[C], int],
            explicit: set[str] = frozenset()) -> tuple[C, data.CorpusPlan]:
    """Name the run, resolve and plan its corpus, and for --resume restore its stored config; fail early.

    The corpus and piece count are stored resolved (`data.source`); a folder of raw pieces is built into
    a corpus inside the run first, and so is its budget (the command's default when it names none). A
    resumed run keeps the config it was started with, except where and on how much it runs
    (options.is_runtime) and the parts of its budget given explicitly; one whose budget is spent is refused.
    `check` sees the config the run will use (the stored one, when resuming), checks what only the model
    knows and returns its grid side; the corpus is planned for that grid. All of it happens before a new
    run is recorded, so a bad option fails in one line and leaves nothing behind.
    """
    if cfg.resources.compile and not cfg.resources.address:  # a cluster's workers may differ from this machine
        from asciiray.train.compiled import check_available

        check_available(uses_gpu(cfg.resources))
    ck = cfg.checkpoint
    if ck.run_name is None:
        if ck.resume:
            raise UserError("--resume needs --run-name: the name of the run to continue")
        cfg = _replace(cfg, checkpoint={"run_name": f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"})
    cfg = _replace(cfg, checkpoint={"storage_path": storage.resolve(cfg.checkpoint.storage_path)})
    uri = uri_of(cfg)
    storage.check_writable(cfg.checkpoint.storage_path, "--storage-path")
    stored_uri = storage.join(uri, RUN_FILE)
    if cfg.checkpoint.resume:
        cfg = _restore(cfg, kind, uri, stored_uri, explicit)
        _check_budget_left(cfg, uri)
        if BUDGET_PATHS & explicit:  # the new budget is the one a later --resume trains toward
            write_record(cfg, kind)
        return cfg, _plan(cfg, check(cfg))
    if storage.exists(stored_uri):
        raise UserError(f"run {uri} already exists: pass --resume to continue it or choose another --run-name")
    cfg = cfg.budgeted()
    grid = check(cfg)
    fresh = not storage.exists(uri)
    try:
        corpus_uri, max_pieces = data.source(cfg.data.corpus, cfg.data.max_pieces)
        if not corpus.is_corpus(corpus_uri):
            corpus_uri = _build_corpus(corpus_uri, storage.join(uri, "corpus"))
        cfg = _replace(cfg, data={"corpus": corpus_uri, "max_pieces": max_pieces})
        plan = _plan(cfg, grid)
    except BaseException:
        if fresh:
            storage.delete_dir(uri)
        raise
    write_record(cfg, kind)
    return cfg, plan


def write_record(cfg: RunConfig, kind: str) -> None:
    """Store the run's config, which --resume continues (rewritten when the driver resolves a value later)."""
    record = {"kind": kind, "version": RUN_FILE_VERSION, "config": config.to_dict(cfg)}
    storage.write_bytes(storage.join(uri_of(cfg), RUN_FILE), json.dumps(record, indent=2).encode())


def _plan(cfg: RunConfig, grid: int) -> data.CorpusPlan:
    return data.plan(cfg.data.corpus, grid, cfg.data.validation_prop, cfg.data.max_pieces)


def _build_corpus(raw: str, out: str) -> str:
    """A folder of raw pieces (the prototype's --datapath habit) built into a corpus inside the run."""
    if not storage.exists(raw):
        raise UserError(f"--corpus {raw} does not exist: pass a corpus, a folder of .txt files or s3:// prefix")
    log.info("--corpus %s is a folder of raw pieces: building a corpus into %s", raw, out)
    manifest = corpus.build_from(raw, out)
    rejected = ", ".join(f"{k} {v}" for k, v in manifest["rejected"].items() if v) or "none"
    log.info("corpus built: %d pieces kept; rejected: %s", manifest["rows"], rejected)
    return out


def _restore(cfg: C, kind: str, uri: str, stored_uri: str, explicit: set[str]) -> C:
    """The stored config of the run at `uri`, with this invocation's runtime settings and explicit budget."""
    if not storage.exists(stored_uri):
        raise UserError(f"no run to resume at {uri}: check --storage-path and --run-name")
    try:
        stored = json.loads(storage.read_bytes(stored_uri))
        values = stored["config"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{stored_uri} is not a readable run record: start a new run") from None
    if stored.get("kind") != kind:
        raise UserError(f"{uri} is a {stored.get('kind')} run, not a {kind} run")
    version = stored.get("version")
    if version != RUN_FILE_VERSION:
        raise UserError(f"run {uri} has a run file of version {version!r}; this asciiray reads version "
                        f"{RUN_FILE_VERSION}: resume it with the asciiray that started it, or start a new run")
    try:
        previous = config.build(type(cfg), values, source=stored_uri)
    except UserError as exc:
        raise UserError(f"run {uri} was written by an older asciiray whose config this one cannot read ({exc}); "
                        f"start a new run") from None
    now = config.to_dict(cfg)
    before = config.to_dict(previous)
    for path in sorted(explicit):
        if is_runtime(path) or path in BUDGET_PATHS:
            continue
        name, key = path.split(".")
        if now[name][key] != before[name][key]:
            raise UserError(f"run {cfg.checkpoint.run_name} was started with {key}={before[name][key]!r}; a "
                            f"resumed run keeps its config (drop --{key.replace('_', '-')} or start a new run)")
    runtime = {path: now[path.split(".")[0]][path.split(".")[1]] for path in _paths(cfg) if is_runtime(path)}
    runtime.update({path: now["optim"][path.split(".")[1]] for path in BUDGET_PATHS & explicit})
    return config.build(type(cfg), runtime, source="flags", base=previous)


def _check_budget_left(cfg: RunConfig, uri: str) -> None:
    """Refuse to resume a run whose latest checkpoint has spent its budget: there is nothing left to train."""
    from asciiray import checkpoint
    from asciiray.train.budget import reached

    candidates = checkpoint.checkpoints_in(uri)
    if not candidates:
        return
    with checkpoint.first_complete(candidates, f"run {uri}", announce=False) as (_, directory):
        spent = reached(cfg.optim, checkpoint.load_meta(directory))
    if spent:
        raise UserError(f"run {cfg.checkpoint.run_name} has trained its budget of {spent}: pass a larger one with "
                        f"--resume (-n, --max-steps or --time-budget) to train on")


def _paths(cfg: RunConfig) -> list[str]:
    return [path for path, _, _ in config.leaves(type(cfg)).values()]


def corpus_datasets(cfg: RunConfig, plan: data.CorpusPlan, grid: int) -> dict[str, Any]:
    """The run's train and validation Ray datasets (Ray starts here, after every driver-side check)."""
    ensure_ray(cfg.resources.address)
    return data.datasets(plan, grid, cfg.data.validation_prop)


def resolve_precision(precision: str, use_gpu: bool) -> str:
    """'auto' means bf16 on a GPU that supports it, else fp16 on older GPUs, fp32 on CPU."""
    import torch

    if precision != "auto":
        return precision
    if use_gpu and torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "16"
    return "32"


def uses_gpu(res: Any) -> bool:
    """Whether the run trains on GPUs: --use-gpu, else whether this machine has CUDA."""
    import torch

    return torch.cuda.is_available() if res.use_gpu is None else res.use_gpu


def launch(train_func: Callable[[dict], None], cfg: RunConfig, kind: str, plan: data.CorpusPlan,
           datasets: dict[str, Any], score: tuple[str, str], callbacks: Sequence[Any] = ()) -> Any:
    """Run `train_func` on the configured Ray Train workers; return Ray's Result.

    `score` (metric, "min" | "max") ranks the checkpoints kept.
    """
    import torch
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from asciiray.runtime import cpu_allocator_env

    res = cfg.resources
    low, high = res.workers()
    use_gpu = uses_gpu(res)
    if use_gpu and not torch.cuda.is_available() and not res.address:
        raise UserError("--use-gpu was given but this machine has no CUDA GPU; drop the flag to train on CPU")
    uri = uri_of(cfg)
    job = Job(kind=kind, cfg=cfg, run_uri=uri, precision=resolve_precision(cfg.optim.precision, use_gpu), plan=plan)
    fs, base = storage.for_ray(cfg.checkpoint.storage_path)
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"job": job},
        scaling_config=ScalingConfig(num_workers=(low, high) if res.elastic else high, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": res.cpus_per_worker,
                                                           **({"GPU": res.gpus_per_worker} if use_gpu else {})},
                                     elastic_resize_monitor_interval_s=res.resize_check_every_s),
        run_config=RunConfig(
            name=cfg.checkpoint.run_name, storage_path=base, storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep_checkpoints,
                                               checkpoint_score_attribute=score[0],
                                               checkpoint_score_order=score[1]),
            failure_config=FailureConfig(max_failures=res.max_failures),
            callbacks=list(callbacks) or None,
            worker_runtime_env=None if use_gpu else {"env_vars": cpu_allocator_env()},
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
        datasets=datasets,
    )
    log.info("run %s: %s worker(s), %s, storage %s", cfg.checkpoint.run_name, res.num_workers,
             "GPU" if use_gpu else "CPU", uri)
    stop_file = storage.join(uri, STOP_FILE)
    storage.delete_file(stop_file)
    result = trainer.fit()
    if storage.exists(stop_file):
        stop = json.loads(storage.read_bytes(stop_file))
        raise RunStopped(f"run {cfg.checkpoint.run_name} stopped at epoch {stop['epoch']}: {stop['reason']}; "
                         f"its last good checkpoint is kept in {uri}")
    return result
