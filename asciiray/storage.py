"""Local paths and s3:// URIs behind one small interface.

S3-compatible stores are reached through the standard AWS variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), which pyarrow, boto3 and Ray all
honour, so the same URI works against AWS, MinIO or a test server.

Every S3 request is retried with backoff by the AWS SDK inside pyarrow, as
the standard variables AWS_RETRY_MODE and AWS_MAX_ATTEMPTS say (boto3 reads
the same ones), so a storage outage of a minute or so is ridden out wherever
the run touches S3: checkpoint uploads, TensorBoard sync, corpus reads, and
Ray Train's own run state (docs/RELIABILITY.md).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from asciiray.errors import UserError

log = logging.getLogger(__name__)


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def join(uri: str, *parts: str) -> str:
    uri = str(uri)
    for part in parts:
        uri = uri.rstrip("/") + "/" + part.strip("/")
    return uri


# Attempts per S3 request when AWS_MAX_ATTEMPTS is unset (the AWS SDK's own default, 3, gives up within
# a few seconds): with the standard mode's backoff (random, doubling, at most 20 s apart) 10 attempts
# span about a minute and a half (91 s seen against a closed port).
DEFAULT_MAX_ATTEMPTS = 10
# AWS_RETRY_MODE values and pyarrow's strategies; pyarrow has no client-side rate limiting, so
# "adaptive" retries as "standard" does.
RETRY_MODES = {"standard": pafs.AwsStandardS3RetryStrategy, "adaptive": pafs.AwsStandardS3RetryStrategy,
               "legacy": pafs.AwsDefaultS3RetryStrategy}


def s3_retries() -> tuple[str, int]:
    """(mode, attempts) from AWS_RETRY_MODE and AWS_MAX_ATTEMPTS, as boto3 reads them; a bad value is a UserError."""
    mode = os.environ.get("AWS_RETRY_MODE") or "standard"
    if mode not in RETRY_MODES:
        raise UserError(f"AWS_RETRY_MODE={mode!r} is unknown: use one of {', '.join(RETRY_MODES)}")
    attempts = os.environ.get("AWS_MAX_ATTEMPTS") or str(DEFAULT_MAX_ATTEMPTS)
    if not attempts.isdigit() or int(attempts) < 1:
        raise UserError(f"AWS_MAX_ATTEMPTS={attempts!r} must be a whole number of at least 1 (tries per S3 request)")
    return mode, int(attempts)


class S3FileSystem(pafs.S3FileSystem):
    """pyarrow's S3 filesystem with the retries of `s3_retries`, kept when pickled.

    Ray sends the run's filesystem to its controller, its workers and Ray Data's read
    tasks; pyarrow's own pickling drops the retry strategy, this one rebuilds it.
    """

    def __init__(self, endpoint: str | None, region: str | None, retry_mode: str, max_attempts: int) -> None:
        super().__init__(endpoint_override=endpoint, region=region,
                         retry_strategy=RETRY_MODES[retry_mode](max_attempts=max_attempts))
        self._args = (endpoint, region, retry_mode, max_attempts)

    def __reduce__(self):
        return type(self), self._args


def s3_filesystem(bucket: str) -> S3FileSystem:
    """An S3 filesystem for `bucket`, set up as pyarrow's `from_uri` would (endpoint from AWS_ENDPOINT_URL_S3 or
    AWS_ENDPOINT_URL; on AWS itself, the bucket's region) plus our retries."""
    retries = s3_retries()
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    return S3FileSystem(endpoint, None if endpoint else _bucket_region(bucket), *retries)


@functools.lru_cache(maxsize=None)
def _bucket_region(bucket: str) -> str:
    try:
        return pafs.resolve_s3_region(bucket)
    except OSError as exc:
        raise error(f"s3://{bucket}", exc) from None


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and in-filesystem path for a local path or s3:// URI."""
    uri = str(uri)
    if is_s3(uri):
        bucket_and_key = uri[len("s3://"):].rstrip("/")
        if not bucket_and_key:
            raise UserError(f"{uri}: an S3 URI needs a bucket, e.g. s3://my-bucket/prefix")
        return s3_filesystem(bucket_and_key.split("/")[0]), bucket_and_key
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def resolve(uri: str) -> str:
    """An s3:// URI as it is, a local path made absolute (a Ray worker or Tune trial runs elsewhere)."""
    return str(uri) if is_s3(uri) else _filesystem(uri)[1]


def for_ray(uri: str) -> tuple[pafs.FileSystem, str]:
    """`uri` as the pyarrow filesystem and in-filesystem path that Ray Data, Ray Train and Tune take
    (`filesystem=`, `storage_filesystem=`); everything else goes through the operations below."""
    return _filesystem(uri)


def from_ray(filesystem: pafs.FileSystem, path: str) -> str:
    """The URI of a location Ray hands back as a filesystem and path (a Checkpoint's, say)."""
    return path if isinstance(filesystem, pafs.LocalFileSystem) else "s3://" + path


def error(uri: str, exc: Exception) -> UserError:
    """A filesystem or S3 failure as a one-line UserError naming the location (and, for S3, what to check)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = " (check AWS_ENDPOINT_URL and credentials)" if is_s3(uri) else ""
    return UserError(f"{uri}: {first}{hint}")


def kind(uri: str) -> str | None:
    """"file" or "directory" for what is at `uri`, None when nothing is there."""
    fs, path = _filesystem(uri)
    try:
        found = fs.get_file_info(path).type
    except OSError as exc:
        raise error(uri, exc) from None
    return {pafs.FileType.File: "file", pafs.FileType.Directory: "directory"}.get(found)


def exists(uri: str) -> bool:
    return kind(uri) is not None


def read_bytes(uri: str) -> bytes:
    fs, path = _filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{uri} does not exist") from None
    except OSError as exc:
        raise error(uri, exc) from None


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = _filesystem(uri)
    try:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(data)
    except OSError as exc:
        raise error(uri, exc) from None


def _entries(uri: str, kind: pafs.FileType) -> list[str]:
    """Sorted names of the entries of one kind directly under `uri` (none if it does not exist)."""
    fs, path = _filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as exc:
        raise error(uri, exc) from None
    return sorted(i.base_name for i in infos if i.type == kind)


def walk_files(uri: str) -> list[tuple[str, int]]:
    """(path relative to `uri`, size in bytes) of every file below the directory `uri`, in path order."""
    fs, root = _filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except OSError as exc:
        raise error(uri, exc) from None
    return sorted((i.path[len(root):].strip("/"), i.size) for i in infos if i.type == pafs.FileType.File)


def list_files(uri: str, suffix: str = "") -> list[str]:
    """Sorted URIs of the files directly under `uri` ending in `suffix`."""
    return [join(uri, n) for n in _entries(uri, pafs.FileType.File) if n.endswith(suffix)]


def list_dirs(uri: str, prefix: str = "") -> list[str]:
    """Sorted names of the directories directly under `uri` that start with `prefix`."""
    return [n for n in _entries(uri, pafs.FileType.Directory) if n.startswith(prefix)]


def copy_dir(src: str, dst: str) -> None:
    """Copy a directory tree between any two of local disk and S3."""
    src_fs, src_path = _filesystem(src)
    dst_fs, dst_path = _filesystem(dst)
    try:
        pafs.copy_files(src_path, dst_path, source_filesystem=src_fs, destination_filesystem=dst_fs)
    except OSError as exc:
        raise error(src if is_s3(src) else dst, exc) from None


def upload_files(local_dir: str | Path, names: list[str], uri: str) -> None:
    """Copy the named files of a local directory into the directory `uri`, one by one in the order given.

    pyarrow's errors pass through as they are, so that a caller which retries on the AWS
    network errors (Ray Train's checkpoint upload) recognises them.
    """
    fs, target = _filesystem(uri)
    fs.create_dir(target, recursive=True)
    for name in names:
        pafs.copy_files(str(Path(local_dir) / name), f"{target}/{name}", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)


def write_parquet(uri: str, table: pa.Table, row_group_size: int) -> None:
    """Write `table` as one zstd-compressed Parquet file at `uri`."""
    fs, path = _filesystem(uri)
    try:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(table, path, filesystem=fs, compression="zstd", row_group_size=row_group_size)
    except OSError as exc:
        raise error(uri, exc) from None


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    """The Parquet file at `uri` (or some columns of it) as a table."""
    fs, path = _filesystem(uri)
    try:
        return pq.read_table(path, filesystem=fs, columns=columns)
    except (OSError, pa.ArrowInvalid) as exc:
        raise error(uri, exc) from None


def parquet_batches(uri: str) -> Iterator[pa.RecordBatch]:
    """The Parquet file at `uri` batch by batch, for files too large to hold at once."""
    fs, path = _filesystem(uri)
    try:
        yield from pq.ParquetFile(path, filesystem=fs).iter_batches()
    except (OSError, pa.ArrowInvalid) as exc:
        raise error(uri, exc) from None


def delete_dir(uri: str) -> None:
    """Remove a directory tree if it is there."""
    _delete(uri, directory=True)


def delete_file(uri: str) -> None:
    """Remove a file if it is there."""
    _delete(uri, directory=False)


def _delete(uri: str, directory: bool) -> None:
    fs, path = _filesystem(uri)
    try:
        fs.delete_dir(path) if directory else fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise error(uri, exc) from None


def check_writable(uri: str, what: str, *, file: bool = False) -> None:
    """Fail in one line naming `what` (the flag or key that gave `uri`), before any work starts and leaving
    nothing behind, when `uri` cannot be written: a directory to write into or, with `file`, a file to
    create or replace. A local path is probed where it would be created, in its nearest existing folder,
    so a path that can never exist (/proc/x, below a file) fails as surely as a read-only one."""
    noun = "file" if file else "directory"
    fix = f"pass a {noun} you can write to"
    if is_s3(uri):
        _probe_s3(uri.rstrip("/").rsplit("/", 1)[0] if file else uri, what, fix)
        return
    path = Path(uri).expanduser().resolve()
    if path.is_dir() if file else path.is_file():
        raise UserError(f"{what} {uri} is a {'directory' if file else 'file'}: pass a {noun}")
    try:
        _probe_local(path.parent if file else path)
    except OSError as exc:
        raise UserError(f"{what} {uri} cannot be written ({exc.strerror or exc}): {fix}") from None


def _probe_s3(uri: str, what: str, fix: str) -> None:
    """Put and delete one object under `uri`. Through boto3, with the same retries: pyarrow would leave a
    directory marker behind in place of the deleted object (and then `export` would find OUT taken)."""
    import boto3
    import botocore.config
    import botocore.exceptions

    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise UserError(f"{what} {uri}: an S3 URI needs a bucket, e.g. s3://my-bucket/prefix")
    mode, attempts = s3_retries()
    key = "/".join(part for part in (prefix.strip("/"), f".asciiray-probe-{uuid.uuid4().hex}") if part)
    try:
        client = boto3.client("s3", config=botocore.config.Config(
            retries={"mode": "standard" if mode == "adaptive" else mode, "total_max_attempts": attempts}))
        client.put_object(Bucket=bucket, Key=key, Body=b"ok")
        client.delete_object(Bucket=bucket, Key=key)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise UserError(f"{what} {error(uri, exc)}: {fix}") from None


def _probe_local(path: Path) -> None:
    """Create and remove a directory in the nearest existing folder of `path`; OSError when that fails."""
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{existing} is not a directory")
    os.rmdir(tempfile.mkdtemp(prefix=".asciiray-probe-", dir=existing))
