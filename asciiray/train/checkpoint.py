"""Checkpoint directories: weights, training state and metadata, none of it code.

A checkpoint is `model.safetensors` (weights), `state.pt` (optimizer and grad
scaler, read back with `weights_only=True`) and `meta.json` (epoch, step,
config, corpus, metrics). Loading never unpickles arbitrary objects. The same
directory layout is used locally and in S3; S3 checkpoints are fetched into a
temporary directory first.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from asciiray import storage
from asciiray.errors import UserError

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"


def save(directory: str | Path, model: torch.nn.Module, meta: dict[str, Any],
         training_state: dict[str, Any] | None = None) -> None:
    """Write one checkpoint into an existing local directory."""
    directory = Path(directory)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(weights, str(directory / MODEL_FILE))
    if training_state is not None:
        torch.save(training_state, directory / STATE_FILE)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


def load_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise UserError(f"{directory} is not an asciiray checkpoint (no {META_FILE})")
    return json.loads(path.read_text())


def load_weights(directory: str | Path, model: torch.nn.Module) -> None:
    """Load weights strictly; a shape mismatch names the checkpoint and the first bad tensor."""
    weights = load_file(str(Path(directory) / MODEL_FILE))
    own = model.state_dict()
    for name, tensor in weights.items():
        if name in own and own[name].shape != tensor.shape:
            raise UserError(f"checkpoint {directory} does not match this model: {name} has shape "
                            f"{tuple(tensor.shape)}, expected {tuple(own[name].shape)} "
                            f"(it was trained with another preset or config)")
    missing = set(own) - set(weights)
    unexpected = set(weights) - set(own)
    if missing or unexpected:
        raise UserError(f"checkpoint {directory} does not match this model "
                        f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    model.load_state_dict(weights)


def load_training_state(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def latest_in(run_uri: str) -> str:
    """The newest checkpoint directory of a run (Ray names them by time, so names sort)."""
    fs, path = storage.filesystem(run_uri)
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as exc:
        raise UserError(f"{run_uri}: {exc}") from None
    names = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory
                   and i.base_name.startswith("checkpoint_"))
    if not names:
        raise UserError(f"{run_uri} holds no checkpoint_* directory: pass a checkpoint or a run directory")
    return storage.join(run_uri, names[-1])


@contextlib.contextmanager
def opened(uri: str) -> Iterator[Path]:
    """A local directory holding the checkpoint at `uri` (a checkpoint or a run, local or S3)."""
    if not storage.exists(uri):
        raise UserError(f"checkpoint {uri} does not exist")
    if not storage.exists(storage.join(uri, META_FILE)):
        uri = latest_in(uri)
    if not storage.is_s3(uri):
        yield Path(storage.filesystem(uri)[1])
        return
    with tempfile.TemporaryDirectory(prefix="asciiray-ckpt-") as tmp:
        storage.copy_dir(uri, tmp)
        yield Path(tmp)
