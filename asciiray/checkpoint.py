"""Model directories, read and written without executing any of their contents.

Two kinds share one reader: a training checkpoint (`model.safetensors` and
`meta.json`: epoch, step, config, corpus, metrics; asciiray.train.checkpoint
adds the training state) and an exported model (`model.safetensors`,
`config.json` and a model card; asciiray.export). Both work locally and in S3;
S3 directories are fetched into a temporary directory first. A run directory
stands for its latest checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from asciiray import storage
from asciiray.errors import UserError

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
EXPORT_FILE = "config.json"
EXPORT_FORMAT = "asciiray-model"


def save_weights(directory: str | Path, model: torch.nn.Module) -> None:
    """The model's weights as `model.safetensors` in an existing local directory."""
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(weights, str(Path(directory) / MODEL_FILE))


def load_meta(directory: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata; an exported model's config.json is read into the same shape."""
    directory = Path(directory)
    if (directory / META_FILE).is_file():
        return json.loads((directory / META_FILE).read_text())
    if (directory / EXPORT_FILE).is_file():
        exported = json.loads((directory / EXPORT_FILE).read_text())
        if isinstance(exported, dict) and exported.get("format") == EXPORT_FORMAT:
            return {**exported["training"], "kind": exported["kind"], "preset": exported["preset"],
                    "model": exported["model"], "exported": True}
    raise UserError(f"{directory} is not an asciiray checkpoint (no {META_FILE}) or exported model "
                    f"(no {EXPORT_FILE} of format {EXPORT_FORMAT})")


def load_weights(directory: str | Path, model: torch.nn.Module) -> None:
    """Load weights strictly; a shape mismatch names the checkpoint and the first bad tensor."""
    try:
        weights = load_file(str(Path(directory) / MODEL_FILE))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"checkpoint {directory}: its {MODEL_FILE} is unreadable ({exc}); the checkpoint is "
                        f"damaged: use another one") from None
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


def load_model(uri: str, kind: str, build: Callable[[dict[str, Any]], torch.nn.Module], fix: str) -> torch.nn.Module:
    """The model of `kind` ('vae', 'renderer') at `uri`: `build` makes it from the stored model config, the
    weights come from safetensors; on the CPU. `fix` says what to pass instead when `uri` holds another kind."""
    with opened(uri) as d:
        meta = load_meta(d)
        if meta.get("kind") != kind:
            raise UserError(f"{uri} is a {meta.get('kind')} checkpoint, not a {kind} checkpoint: {fix}")
        try:
            model = build(meta["model"])
        except (KeyError, TypeError) as exc:
            raise UserError(f"{uri}: its {kind} config is unreadable ({exc}); retrain it with this version of "
                            f"asciiray") from None
        load_weights(d, model)
    return model


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


def resolve(uri: str) -> str:
    """The model directory `uri` names: itself (a checkpoint or exported model), or a run's latest checkpoint."""
    if not storage.exists(uri):
        raise UserError(f"checkpoint {uri} does not exist")
    if storage.exists(storage.join(uri, META_FILE)) or storage.exists(storage.join(uri, EXPORT_FILE)):
        return uri
    return latest_in(uri)


@contextlib.contextmanager
def opened(uri: str) -> Iterator[Path]:
    """A local directory holding the model at `uri` (a checkpoint, a run or an exported model, local or S3)."""
    uri = resolve(uri)
    if not storage.is_s3(uri):
        yield Path(storage.filesystem(uri)[1])
        return
    with tempfile.TemporaryDirectory(prefix="asciiray-ckpt-") as tmp:
        storage.copy_dir(uri, tmp)
        yield Path(tmp)
