"""Driver side of a training run: name it, check it, launch a TorchTrainer, read the result.

Shared by every training command (the VAE, the neural renderer, each Tune
trial), so storage layout, resuming and fault tolerance behave the same for
all of them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from asciiray import data, storage
from asciiray.errors import UserError
from asciiray.runtime import ensure_ray
from asciiray.train.loop import STOP_FILE
from asciiray.train.options import RUNTIME_KEYS, RunOptions

log = logging.getLogger(__name__)

RUN_FILE = "asciiray-run.json"


class RunStopped(RuntimeError):
    """The run ended early for a reason the user must see (e.g. persistent non-finite loss)."""


def run_uri(opts: RunOptions) -> str:
    path = opts.storage_path if storage.is_s3(opts.storage_path) else storage.filesystem(opts.storage_path)[1]
    return storage.join(path, opts.run_name)


def prepare(opts: RunOptions, kind: str, explicit: set[str] = frozenset(),
            check: Callable[[Any], None] = lambda opts: None) -> RunOptions:
    """Name the run, resolve its corpus, and for --resume restore its stored config; fail early on storage problems.

    The corpus and piece count are stored resolved (`data.source`). A resumed run keeps the config it was started with, except where and how it runs
    (RUNTIME_KEYS) and its epoch count, which an explicit --n-epochs may raise. `check`
    sees the config the run will use (the stored one, when resuming) before a new run is
    written, so a bad option fails in one line and leaves nothing behind.
    """
    corpus, max_pieces = data.source(opts.corpus, opts.max_pieces)
    opts = dataclasses.replace(opts, corpus=corpus, max_pieces=max_pieces)
    if not opts.run_name:
        if opts.resume:
            raise UserError("--resume needs --run-name: the name of the run to continue")
        opts = dataclasses.replace(opts, run_name=f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    if opts.n_epochs < 1 or opts.batch_size < 1 or opts.checkpoint_every < 1 or opts.keep_checkpoints < 1:
        raise UserError("--n-epochs, --batch-size, --checkpoint-every and --keep-checkpoints must be at least 1")
    uri = run_uri(opts)
    storage.check_writable(opts.storage_path)
    stored_uri = storage.join(uri, RUN_FILE)
    if opts.resume:
        if not storage.exists(stored_uri):
            raise UserError(f"no run to resume at {uri}: check --storage-path and --run-name")
        stored = json.loads(storage.read_bytes(stored_uri))
        if stored.get("kind") != kind:
            raise UserError(f"{uri} is a {stored.get('kind')} run, not a {kind} run")
        values = stored["config"]
        if "n_epochs" in explicit:
            values["n_epochs"] = opts.n_epochs
        for key in explicit - RUNTIME_KEYS:
            if key in values and values[key] != getattr(opts, key):
                raise UserError(f"run {opts.run_name} was started with {key}={values[key]!r}; a resumed run "
                                f"keeps its config (drop --{key.replace('_', '-')} or start a new run)")
        values.update({k: getattr(opts, k) for k in RUNTIME_KEYS})
        opts = type(opts)(**values)
        check(opts)
        return opts
    check(opts)
    if storage.exists(stored_uri):
        raise UserError(f"run {uri} already exists: pass --resume to continue it or choose another --run-name")
    storage.write_bytes(stored_uri, json.dumps({"kind": kind, "config": dataclasses.asdict(opts)},
                                               indent=2).encode())
    return opts


def corpus_datasets(opts: RunOptions, grid: int) -> tuple[data.CorpusPlan, dict[str, Any]]:
    """The run's corpus planned on the driver (a corpus with no usable piece fails before Ray starts),
    then its train and validation Ray datasets."""
    plan = data.plan(opts.corpus, grid, opts.validation_prop, opts.max_pieces)
    ensure_ray(opts.address or None)
    return plan, data.datasets(plan, grid, opts.validation_prop)


def launch(train_func: Callable[[dict], None], opts: RunOptions, loop_config: dict[str, Any],
           datasets: dict[str, Any], callbacks: Sequence[Any] = (),
           checkpoint_score: tuple[str, str] = ("val/loss", "min")) -> Any:
    """Run `train_func` on `opts.num_workers` Ray Train workers; return Ray's Result.

    `checkpoint_score` (metric, min|max) ranks the checkpoints --keep-checkpoints keeps.
    """
    import torch
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from asciiray.runtime import cpu_allocator_env
    from asciiray.train.loop import resolve_precision

    use_gpu = torch.cuda.is_available() if opts.use_gpu is None else opts.use_gpu
    if use_gpu and not torch.cuda.is_available() and not opts.address:
        raise UserError("--use-gpu was given but this machine has no CUDA GPU; drop the flag to train on CPU")
    fs, base = storage.filesystem(opts.storage_path)
    config = {**dataclasses.asdict(opts), **loop_config, "run_uri": run_uri(opts),
              "precision": resolve_precision(opts.precision, use_gpu)}
    trainer = TorchTrainer(
        train_func,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=opts.num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": opts.cpus_per_worker,
                                                           **({"GPU": opts.gpus_per_worker} if use_gpu else {})}),
        run_config=RunConfig(
            name=opts.run_name, storage_path=base, storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(num_to_keep=opts.keep_checkpoints,
                                               checkpoint_score_attribute=checkpoint_score[0],
                                               checkpoint_score_order=checkpoint_score[1]),
            failure_config=FailureConfig(max_failures=opts.max_failures),
            callbacks=list(callbacks) or None,
            worker_runtime_env=None if use_gpu else {"env_vars": cpu_allocator_env()},
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
        datasets=datasets,
    )
    log.info("run %s: %d worker(s), %s, storage %s", opts.run_name, opts.num_workers,
             "GPU" if use_gpu else "CPU", run_uri(opts))
    stop_file = storage.join(run_uri(opts), STOP_FILE)
    storage.delete_file(stop_file)
    result = trainer.fit()
    if storage.exists(stop_file):
        stop = json.loads(storage.read_bytes(stop_file))
        raise RunStopped(f"run {opts.run_name} stopped at epoch {stop['epoch']}: {stop['reason']}; "
                         f"its last good checkpoint is kept in {run_uri(opts)}")
    return result

