"""Checkpoint directories: weights, training state and metadata, none of it code.

A checkpoint is `model.safetensors` (weights), `state.pt` (optimizer and grad
scaler, read back with `weights_only=True`) and `meta.json` (format version,
epoch, step, config, corpus, metrics, and the size and SHA-256 of each other
file). meta.json is written last, on local disk and in storage alike, so a
checkpoint is complete only once it is there; loading checks every file
against it, so a checkpoint cut short (a killed process, a storage outage) or
changed afterwards is never loaded. A run directory stands for its newest
complete checkpoint, and a resumed or restarted run falls back past damaged
ones (docs/RELIABILITY.md). The hashes guard against accidents, not against
someone who can rewrite meta.json too.

Loading never unpickles arbitrary objects. S3 checkpoints are fetched into a
temporary directory first.
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

import pyarrow.fs as pafs
import torch
from safetensors.torch import load_file, save_file

from asciiray import storage
from asciiray.errors import UserError

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
# Version of the checkpoint layout written here. 1 (meta.json without "format") had no file list:
# such checkpoints still load, unverified, with a warning.
FORMAT = 2


class Damaged(UserError):
    """A checkpoint that is incomplete or whose files differ from its meta.json; a resumed run skips it."""


def save(directory: str | Path, model: torch.nn.Module, meta: dict[str, Any],
         training_state: dict[str, Any] | None = None) -> None:
    """Write one checkpoint into an existing local directory, meta.json (with the other files' hashes) last."""
    directory = Path(directory)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(weights, str(directory / MODEL_FILE))
    files = [MODEL_FILE]
    if training_state is not None:
        torch.save(training_state, directory / STATE_FILE)
        files.append(STATE_FILE)
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
    version = meta.get("format", 1)
    if not isinstance(version, int) or version > FORMAT:
        raise UserError(f"checkpoint {name} was written by a newer asciiray (checkpoint format {version!r}; this "
                        f"version reads up to {FORMAT}): upgrade asciiray to load it")
    if version < 2:
        log.warning("checkpoint %s was written by an older asciiray, without file hashes: loading it unverified", name)
        return meta
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


def checkpoints_in(run_uri: str) -> list[str]:
    """URIs of a run's checkpoint_* directories, newest first (Ray names them by time, so names sort)."""
    fs, path = storage.filesystem(run_uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as exc:
        raise UserError(f"{run_uri}: {exc}") from None
    names = sorted((i.base_name for i in infos if i.type == pafs.FileType.Directory
                    and i.base_name.startswith("checkpoint_")), reverse=True)
    return [storage.join(run_uri, n) for n in names]


@contextlib.contextmanager
def _fetched(uri: str) -> Iterator[Path]:
    """A local directory with the contents of the directory at `uri`."""
    if not storage.is_s3(uri):
        yield Path(storage.filesystem(uri)[1])
        return
    with tempfile.TemporaryDirectory(prefix="asciiray-ckpt-") as tmp:
        storage.copy_dir(uri, tmp)
        yield Path(tmp)


@contextlib.contextmanager
def _first_complete(candidates: list[str], owner: str, announce: bool = True) -> Iterator[tuple[str, Path]]:
    """(URI, local directory) of the first of `candidates` that verifies; each damaged or incomplete one
    before it is skipped with a one-line warning (when `announce`)."""
    for uri in candidates:
        with _fetched(uri) as directory:
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
    with _first_complete(candidates, f"run {run_uri}") as (uri, _):
        return uri


@contextlib.contextmanager
def opened(uri: str) -> Iterator[Path]:
    """A local directory holding the verified checkpoint at `uri`: a checkpoint, or a run (its newest
    complete checkpoint), local or S3. A damaged or incomplete checkpoint is refused in one line."""
    if not storage.exists(uri):
        raise UserError(f"checkpoint {uri} does not exist")
    candidates = checkpoints_in(uri)
    if candidates:
        with _first_complete(candidates, f"run {uri}") as (_, directory):
            yield directory
        return
    named = uri.rstrip("/").rsplit("/", 1)[-1].startswith("checkpoint_")
    if not (named or storage.exists(storage.join(uri, META_FILE)) or storage.exists(storage.join(uri, MODEL_FILE))):
        raise UserError(f"{uri} holds no checkpoint: pass a checkpoint directory or a run directory")
    with _fetched(uri) as directory:
        verify(directory, uri)
        yield directory


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
    with _first_complete([offered, *older], f"run {run_uri}", announce) as (_, directory):
        yield directory


def uploader(run_uri: str) -> Callable[[Any, str], Any]:
    """Ray Train's `checkpoint_upload_fn` for a run: copies a local checkpoint into the run, meta.json last.

    A copy cut short therefore leaves no meta.json: an incomplete checkpoint, which
    is never loaded. Errors are pyarrow's, so Ray's retries of an upload recognise
    the AWS network errors they retry.
    """
    def upload(ckpt: Any, dir_name: str) -> Any:
        import ray.train

        fs, target = storage.filesystem(storage.join(run_uri, dir_name))
        local = Path(ckpt.path)
        names = sorted(p.name for p in local.iterdir() if p.is_file() and p.name != META_FILE)
        fs.create_dir(target, recursive=True)
        for name in [*names, META_FILE]:
            pafs.copy_files(str(local / name), f"{target}/{name}", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)
        return ray.train.Checkpoint(path=target, filesystem=fs)

    return upload


def uri_of(ckpt: Any) -> str:
    """A Ray Checkpoint's location as a URI for `storage`."""
    return ckpt.path if isinstance(ckpt.filesystem, pafs.LocalFileSystem) else "s3://" + ckpt.path
