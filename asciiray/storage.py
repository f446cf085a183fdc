"""Local paths and s3:// URIs behind one small interface.

S3-compatible stores are reached through the standard AWS variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), which pyarrow, boto3 and Ray all
honour, so the same URI works against AWS, MinIO or a test server.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.fs as pafs

from asciiray.errors import UserError

log = logging.getLogger(__name__)


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def join(uri: str, *parts: str) -> str:
    uri = str(uri)
    for part in parts:
        uri = uri.rstrip("/") + "/" + part.strip("/")
    return uri


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and in-filesystem path for a local path or s3:// URI."""
    uri = str(uri)
    if is_s3(uri):
        bucket_and_key = uri[len("s3://"):].rstrip("/")
        if not bucket_and_key:
            raise UserError(f"{uri}: an S3 URI needs a bucket, e.g. s3://my-bucket/prefix")
        # from_uri reads AWS_ENDPOINT_URL, region and credentials from the environment.
        return pafs.FileSystem.from_uri("s3://" + bucket_and_key.split("/")[0])[0], bucket_and_key
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def resolve(uri: str) -> str:
    """An s3:// URI as it is, a local path made absolute (a Ray worker or Tune trial runs elsewhere)."""
    return str(uri) if is_s3(uri) else filesystem(uri)[1]


def error(uri: str, exc: Exception) -> UserError:
    """A filesystem or S3 failure as a one-line UserError naming the location (and, for S3, what to check)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = " (check AWS_ENDPOINT_URL and credentials)" if is_s3(uri) else ""
    return UserError(f"{uri}: {first}{hint}")


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as exc:
        raise error(uri, exc) from None


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{uri} does not exist") from None
    except OSError as exc:
        raise error(uri, exc) from None


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem(uri)
    try:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(data)
    except OSError as exc:
        raise error(uri, exc) from None


def _entries(uri: str, kind: pafs.FileType) -> list[str]:
    """Sorted names of the entries of one kind directly under `uri` (none if it does not exist)."""
    fs, path = filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as exc:
        raise error(uri, exc) from None
    return sorted(i.base_name for i in infos if i.type == kind)


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Sorted URIs of the files directly under `uri` ending in `suffix`."""
    return [join(uri, n) for n in _entries(uri, pafs.FileType.File) if n.endswith(suffix)]


def list_dirs(uri: str, prefix: str = "") -> list[str]:
    """Sorted names of the directories directly under `uri` that start with `prefix`."""
    return [n for n in _entries(uri, pafs.FileType.Directory) if n.startswith(prefix)]


def copy_dir(src: str, dst: str) -> None:
    """Copy a directory tree between any two of local disk and S3."""
    src_fs, src_path = filesystem(src)
    dst_fs, dst_path = filesystem(dst)
    try:
        pafs.copy_files(src_path, dst_path, source_filesystem=src_fs, destination_filesystem=dst_fs)
    except OSError as exc:
        raise error(src if is_s3(src) else dst, exc) from None


def delete_dir(uri: str) -> None:
    """Remove a directory tree if it is there."""
    _delete(uri, directory=True)


def delete_file(uri: str) -> None:
    """Remove a file if it is there."""
    _delete(uri, directory=False)


def _delete(uri: str, directory: bool) -> None:
    fs, path = filesystem(uri)
    try:
        fs.delete_dir(path) if directory else fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise error(uri, exc) from None


def check_writable(uri: str) -> None:
    """Fail early, in one line, when a storage location cannot be reached or written."""
    probe = join(uri, ".asciiray-probe")
    write_bytes(probe, b"ok")
    delete_file(probe)
