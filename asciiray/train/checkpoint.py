"""What a training run adds to a checkpoint (asciiray.checkpoint holds the rest): the optimizer and grad
scaler in `state.pt`, read back with `weights_only=True`; writing in the order that makes a cut-short
checkpoint visibly incomplete; and the fallback past damaged checkpoints when a run (re)starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from asciiray import storage
from asciiray.checkpoint import META_FILE, MODEL_FILE, checkpoints_in, first_complete, save_weights, write_meta

STATE_FILE = "state.pt"


def save(directory: str | Path, model: torch.nn.Module, meta: dict[str, Any],
         training_state: dict[str, Any] | None = None) -> None:
    """Write one checkpoint into an existing local directory, meta.json (with the other files' hashes) last."""
    directory = Path(directory)
    save_weights(directory, model)
    files = [MODEL_FILE]
    if training_state is not None:
        torch.save(training_state, directory / STATE_FILE)
        files.append(STATE_FILE)
    write_meta(directory, meta, files)


def load_training_state(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


@contextlib.contextmanager
def resumed(run_uri: str, offered: str | None, announce: bool) -> Iterator[Path | None]:
    """The checkpoint a (re)started run continues from, as a verified local directory; None for a fresh start.

    `offered` is the one Ray Train restores (the latest it registered, after a worker failure or for
    a run of the same name and storage). When it is damaged or incomplete, the newest complete
    checkpoint written before it takes its place, with a one-line warning (when `announce`, so
    one worker says it).
    """
    if offered is None:
        yield None
        return
    name = offered.rstrip("/").rsplit("/", 1)[-1]
    older = [c for c in checkpoints_in(run_uri) if c.rstrip("/").rsplit("/", 1)[-1] < name]
    with first_complete([offered, *older], f"run {run_uri}", announce) as (_, directory):
        yield directory


def uploader(run_uri: str) -> Callable[[Any, str], Any]:
    """Ray Train's `checkpoint_upload_fn` for a run: copies a local checkpoint into the run, meta.json last.

    A copy cut short therefore leaves no meta.json: an incomplete checkpoint, which
    is never loaded. Errors are pyarrow's, so Ray's retries of an upload recognise
    the AWS network errors they retry.
    """
    def upload(ckpt: Any, dir_name: str) -> Any:
        import ray.train

        uri = storage.join(run_uri, dir_name)
        local = Path(ckpt.path)
        names = sorted(p.name for p in local.iterdir() if p.is_file() and p.name != META_FILE)
        storage.upload_files(local, [*names, META_FILE], uri)
        fs, target = storage.for_ray(uri)
        return ray.train.Checkpoint(path=target, filesystem=fs)

    return upload


def uri_of(ckpt: Any) -> str:
    """A Ray Checkpoint's location as a URI for `storage`."""
    return storage.from_ray(ckpt.filesystem, ckpt.path)
