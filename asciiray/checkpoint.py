"""Model directories, read and written without executing any of their contents.

Two kinds share one reader: a training checkpoint (`model.safetensors`,
`meta.json`: format, epoch, step, config, corpus, metrics and the size and
SHA-256 of every other file; asciiray.train.checkpoint adds the training
state) and an exported model (`model.safetensors`, `config.json` and a model
card; asciiray.export). Both work locally and in S3; S3 directories are
fetched into a temporary directory first.

meta.json is written last, so a checkpoint is complete only once it is there;
loading checks every file against it, so a checkpoint cut short (a killed
process, a storage outage) or changed afterwards is never loaded. A run
directory stands for its newest complete checkpoint, and a resumed or
restarted run falls back past damaged ones (docs/RELIABILITY.md). The hashes
guard against accidents, not against someone who can rewrite meta.json too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from asciiray import pretrained, storage
from asciiray.errors import UserError

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
EXPORT_FILE = "config.json"
EXPORT_FORMAT = "asciiray-model"
# Version of the checkpoint layout: meta.json lists every other file with its size and SHA-256.
FORMAT = 2


class Damaged(UserError):
    """A checkpoint that is incomplete or whose files differ from its meta.json; a resumed run skips it."""


def save_weights(directory: str | Path, model: torch.nn.Module, half: bool = False) -> None:
    """The model's weights as `model.safetensors` in an existing local directory; `half` stores floating-point
    tensors as fp16 (half the size; loading casts them back to the model's dtype)."""
    weights = {k: (v.half() if half and v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in model.state_dict().items()}
    save_file(weights, str(Path(directory) / MODEL_FILE))


def write_meta(directory: str | Path, meta: dict[str, Any], files: list[str]) -> None:
    """meta.json, with the size and SHA-256 of `files` (already written), atomically and last."""
    directory = Path(directory)
    listing = {name: {"size": (directory / name).stat().st_size, "sha256": _sha256(directory / name)}
               for name in files}
    partial = directory / (META_FILE + ".partial")
    partial.write_text(json.dumps({**meta, "format": FORMAT, "files": listing}, indent=2, sort_keys=True))
    partial.replace(directory / META_FILE)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(directory: str | Path, name: str | None = None) -> dict[str, Any]:
    """The meta.json of a complete, intact checkpoint in a local directory.

    Raises Damaged when meta.json is missing or unreadable or a file it lists is
    missing, of another size or another SHA-256; UserError when a newer asciiray
    wrote it. Messages call the checkpoint `name` (default: the directory).
    """
    directory = Path(directory)
    name = name or str(directory)
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except FileNotFoundError:
        raise Damaged(f"checkpoint {name} is incomplete: it has no {META_FILE} (its writing was cut short)") from None
    except (OSError, ValueError):
        raise Damaged(f"checkpoint {name} is damaged: its {META_FILE} is unreadable") from None
    if not isinstance(meta, dict):
        raise Damaged(f"checkpoint {name} is damaged: its {META_FILE} is not a JSON object")
    version = meta.get("format")
    if not isinstance(version, int) or version < FORMAT:
        raise Damaged(f"checkpoint {name} is damaged: its {META_FILE} names no checkpoint format {FORMAT}")
    if version > FORMAT:
        raise UserError(f"checkpoint {name} was written by a newer asciiray (checkpoint format {version!r}; this "
                        f"version reads up to {FORMAT}): upgrade asciiray to load it")
    files = meta.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise Damaged(f"checkpoint {name} is damaged: its {META_FILE} lists no {MODEL_FILE}")
    for file, expected in files.items():
        problem = _file_problem(directory, file, expected)
        if problem:
            raise Damaged(f"checkpoint {name} is damaged: {problem}")
    return meta


def _file_problem(directory: Path, file: str, expected: Any) -> str | None:
    """What is wrong with one file a meta.json lists, or None."""
    if Path(file).name != file or file in (".", "..") or not isinstance(expected, dict):
        return f"its {META_FILE} lists {file!r} oddly"
    path = directory / file
    if not path.is_file():
        return f"{file} is missing"
    size = path.stat().st_size
    if size != expected.get("size"):
        return f"{file} is {size} bytes, {META_FILE} says {expected.get('size')} (cut short or changed)"
    if _sha256(path) != expected.get("sha256"):
        return f"{file} does not match the SHA-256 in {META_FILE} (corrupted or changed)"
    return None


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


def checkpoints_in(run_uri: str) -> list[str]:
    """URIs of a run's checkpoint_* directories, newest first (Ray names them by time, so names sort)."""
    return [storage.join(run_uri, n) for n in reversed(storage.list_dirs(run_uri, "checkpoint_"))]


@contextlib.contextmanager
def fetched(uri: str) -> Iterator[Path]:
    """A local directory with the contents of the directory at `uri` (S3: a temporary copy)."""
    if not storage.is_s3(uri):
        yield Path(storage.resolve(uri))
        return
    with tempfile.TemporaryDirectory(prefix="asciiray-ckpt-") as tmp:
        storage.copy_dir(uri, tmp)
        yield Path(tmp)


@contextlib.contextmanager
def first_complete(candidates: list[str], owner: str, announce: bool = True) -> Iterator[tuple[str, Path]]:
    """(URI, local directory) of the first of `candidates` that verifies; each damaged or incomplete one
    before it is skipped with a one-line warning (when `announce`)."""
    for uri in candidates:
        with fetched(uri) as directory:
            try:
                verify(directory, uri)
            except Damaged as exc:
                if announce:
                    log.warning("%s; skipping it", exc)
                continue
            yield uri, directory
            return
    raise Damaged(f"{owner} has no complete checkpoint ({len(candidates)} damaged or incomplete): "
                  f"start a new run")


def latest_in(run_uri: str) -> str:
    """The newest complete checkpoint of a run."""
    candidates = checkpoints_in(run_uri)
    if not candidates:
        raise UserError(f"{run_uri} holds no checkpoint_* directory: pass a checkpoint or a run directory")
    with first_complete(candidates, f"run {run_uri}") as (uri, _):
        return uri


def resolve(uri: str) -> str:
    """The model directory `uri` names: itself (a checkpoint or exported model), or a run's newest complete
    checkpoint; `pretrained` is the model shipped in the package."""
    uri = pretrained.resolve(uri)
    if not storage.exists(uri):
        raise UserError(f"checkpoint {uri} does not exist")
    if storage.exists(storage.join(uri, META_FILE)) or storage.exists(storage.join(uri, EXPORT_FILE)):
        return uri
    if not checkpoints_in(uri) and storage.exists(storage.join(uri, MODEL_FILE)):
        return uri  # weights without meta.json: a checkpoint whose writing was cut short (refused by `opened`)
    return latest_in(uri)


@contextlib.contextmanager
def opened(uri: str) -> Iterator[Path]:
    """A local directory holding the verified model at `uri` (a checkpoint, a run's newest complete
    checkpoint or an exported model, local or S3); a damaged or incomplete checkpoint is refused in one line."""
    uri = resolve(uri)
    with fetched(uri) as directory:
        if not (directory / EXPORT_FILE).is_file():
            verify(directory, uri)
        yield directory
