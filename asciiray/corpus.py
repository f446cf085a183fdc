"""The corpus: cleaning raw pieces into Parquet shards, and reading them back.

A corpus is a local directory or an s3:// prefix holding `part-NNNNN.parquet`
shards (rows sorted by id) and a `manifest.json`. Building is deterministic:
the same raw inputs give byte-identical shards, so a corpus can be diffed,
cached and cited. Bad pieces never stop a build; they are counted by reason
and the counts travel in the manifest.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from asciiray import charset, storage
from asciiray.errors import UserError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMA = pa.schema([
    ("id", pa.string()),
    ("text", pa.string()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("labels", pa.list_(pa.string())),
    ("source", pa.string()),
    ("url", pa.string()),
    ("caption", pa.string()),
])
MANIFEST = "manifest.json"
# A .txt file larger than this many times --max-bytes cannot normalise to a piece within it (trailing spaces
# and CRLFs aside): it is counted as too large without being read, however large it is.
RAW_BYTES_PER_PIECE = 8
SHARD_RE = re.compile(r"part-\d{5}\.parquet")
PROGRESS_EVERY = 10_000
# Fast path only: a piece matching this is valid; anything else goes to charset.validate for its reason.
_INVALID_CHAR = re.compile(r"[^\n\x20-\x7e]")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Size bounds a piece must meet to enter the corpus (lines, bytes of normalised text, grid side)."""

    grid: int = charset.DEFAULT_GRID
    min_lines: int = 3
    min_bytes: int = 25
    max_lines: int = 100
    max_bytes: int = 6000

    def check(self) -> None:
        """Raise UserError on limits that would reject everything or make no sense."""
        if min(dataclasses.astuple(self)) < 0 or self.grid < 1:
            raise UserError(f"corpus limits {self}: every limit must be non-negative and --grid at least 1")
        if self.min_lines > self.max_lines or self.min_bytes > self.max_bytes:
            raise UserError(f"corpus limits {self}: --min-lines/--min-bytes must not exceed "
                            f"--max-lines/--max-bytes")


def strip_signatures(text: str, signatures: Iterable[str]) -> str:
    """Remove artists' signatures from line ends, so they do not become part of the art.

    Rule, per line of normalised text: if the line (trailing spaces ignored)
    ends with one of `signatures` (exact, case-sensitive) and that match is
    either the whole line or preceded by a character that is not a letter or
    digit, the match is removed, then trailing spaces. At most one signature is
    removed per line, the longest that matches. So with "jgs", `|_|  jgs` and
    `/_)jgs` lose it, `bugs jgs` loses it, but `hjgs` and `dogs` (for "gs") do
    not. Lines left blank at the ends are removed by the normalisation after.
    """
    sigs = sorted({s.strip() for s in signatures if s.strip()}, key=lambda s: (-len(s), s))
    if not sigs:
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines):
        line = line.rstrip(" ")
        for sig in sigs:
            if line.endswith(sig):
                before = line[:-len(sig)]
                if not before or not before[-1].isalnum():
                    lines[i] = before.rstrip(" ")
                    break
    return "\n".join(lines)


class CorpusBuilder:
    """Cleans raw pieces one by one, deduplicates them by id and writes the shards.

    Everything is held in memory until `write`; a corpus of a few hundred
    thousand pieces of at most 6 kB is well within a laptop's reach.
    """

    def __init__(self, limits: Limits = Limits(), signatures: Iterable[str] = ()) -> None:
        limits.check()
        self.limits = limits
        self.signatures = list(signatures)
        self.rejected: collections.Counter[str] = collections.Counter()
        self.sources: collections.Counter[str] = collections.Counter()
        self._rows: dict[str, dict[str, Any]] = {}
        self._seen = 0

    @property
    def accepted(self) -> int:
        """Distinct pieces kept so far."""
        return len(self._rows)

    def reject(self, reason: str) -> None:
        """Count a piece a caller found unusable before `add` (e.g. a malformed raw record)."""
        self._tick()
        self.rejected[reason] += 1

    def add(self, raw: str | bytes, labels: list[str], source: str, url: str = "", caption: str = "") -> str | None:
        """Clean and keep one raw piece; returns the rejection reason, or None if it was kept.

        Bytes are decoded as UTF-8 (a leading BOM is dropped). A piece whose
        normalised text is already in the corpus counts as `duplicate`, and its
        labels are merged into the kept row (first row's order, new labels after).
        """
        self._tick()
        cleaned = self._clean(raw)
        if isinstance(cleaned, str):
            self.rejected[cleaned] += 1
            return cleaned
        text, height, width = cleaned
        piece_id = hashlib.sha256(text.encode("ascii")).hexdigest()
        kept = self._rows.get(piece_id)
        if kept is not None:
            kept["labels"].extend(label for label in labels if label not in kept["labels"])
            self.rejected["duplicate"] += 1
            return "duplicate"
        unique_labels: list[str] = []
        for label in labels:
            if label not in unique_labels:
                unique_labels.append(label)
        self._rows[piece_id] = {"id": piece_id, "text": text, "height": height, "width": width,
                                "labels": unique_labels, "source": source, "url": url, "caption": caption}
        self.sources[source] += 1
        return None

    def _tick(self) -> None:
        self._seen += 1
        if self._seen % PROGRESS_EVERY == 0:
            log.info("%d pieces read: %d kept, %d rejected", self._seen, self.accepted, sum(self.rejected.values()))

    def _clean(self, raw: str | bytes) -> tuple[str, int, int] | str:
        """(text, height, width) of a usable piece, or the reason it is not usable."""
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                return "invalid_utf8"
        text = charset.normalize(raw)
        if self.signatures:
            text = charset.normalize(strip_signatures(text, self.signatures))
        if not text or _INVALID_CHAR.search(text):
            try:
                charset.validate(text)
            except charset.InvalidPiece as exc:
                return exc.reason
        height, width = charset.shape(text)
        lim = self.limits
        if height < lim.min_lines or len(text) < lim.min_bytes:
            return "too_small"
        if height > lim.max_lines or len(text) > lim.max_bytes:
            return "too_large"
        if height > lim.grid or width > lim.grid:
            return "over_grid"
        return text, height, width

    def table(self) -> pa.Table:
        """The kept rows as one table, sorted by id."""
        rows = [self._rows[k] for k in sorted(self._rows)]
        return pa.Table.from_pydict({f.name: [r[f.name] for r in rows] for f in SCHEMA}, schema=SCHEMA)

    def write(self, uri: str, rows_per_shard: int = 50_000) -> dict:
        """Write the shards and the manifest to `uri` (local or s3://), replacing any corpus there.

        The old manifest goes first and the new one last, so an interrupted
        build never looks like a finished corpus. Returns the manifest.
        """
        if rows_per_shard < 1:
            raise UserError(f"--rows-per-shard {rows_per_shard}: must be at least 1")
        table = self.table()
        storage.delete_file(storage.join(uri, MANIFEST))
        for old in storage.list_files(uri, ".parquet"):
            if SHARD_RE.fullmatch(old.rsplit("/", 1)[-1]):
                storage.delete_file(old)
        n_shards = max(1, -(-table.num_rows // rows_per_shard))
        for i in range(n_shards):
            part = table.slice(i * rows_per_shard, rows_per_shard)
            shard = storage.join(uri, f"part-{i:05d}.parquet")
            storage.write_parquet(shard, part, row_group_size=rows_per_shard)
            log.info("wrote %s (%d rows)", shard, part.num_rows)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "rows": table.num_rows,
            "shards": n_shards,
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sources": dict(sorted(self.sources.items())),
            "rejected": dict(sorted(self.rejected.items())),
            "limits": dataclasses.asdict(self.limits),
        }
        storage.write_bytes(storage.join(uri, MANIFEST), (json.dumps(manifest, indent=2) + "\n").encode())
        log.info("corpus %s: %d pieces in %d shard(s), %d rejected", uri, table.num_rows, n_shards,
                 sum(self.rejected.values()))
        return manifest


# ---- reading -------------------------------------------------------------------------------

def read_manifest(uri: str) -> dict:
    """The manifest of the corpus at `uri`; a UserError if there is no corpus there."""
    path = storage.join(uri, MANIFEST)
    if not storage.exists(path):
        raise UserError(f"{uri} is not a corpus (no {MANIFEST}); build one with `asciiray corpus build`")
    try:
        manifest = json.loads(storage.read_bytes(path))
    except ValueError:
        raise UserError(f"{path} is not valid JSON; rebuild the corpus with `asciiray corpus build`") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{uri}: corpus schema version {manifest.get('schema_version')!r}, expected "
                        f"{SCHEMA_VERSION}; rebuild it with `asciiray corpus build`")
    return manifest


def shard_uris(uri: str) -> list[str]:
    """URIs of the corpus shards, in order; a UserError if the manifest is unreadable or there are none."""
    read_manifest(uri)
    shards = [u for u in storage.list_files(uri, ".parquet") if SHARD_RE.fullmatch(u.rsplit("/", 1)[-1])]
    if not shards:
        raise UserError(f"{uri} holds no part-NNNNN.parquet shards; build a corpus with `asciiray corpus build`")
    return shards


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """The whole corpus (or some columns of it) as one table, rows in id order."""
    unknown = set(columns or ()) - set(SCHEMA.names)
    if unknown:
        raise ValueError(f"unknown corpus columns {sorted(unknown)}; known: {SCHEMA.names}")
    return pa.concat_tables([storage.read_parquet(s, columns) for s in shard_uris(uri)])


def iter_pieces(uri: str, label: str | None = None) -> Iterator[dict]:
    """Rows of the corpus as dicts, shard by shard; with `label`, only pieces carrying it."""
    for shard in shard_uris(uri):
        for batch in storage.parquet_batches(shard):
            for row in batch.to_pylist():
                if label is None or label in row["labels"]:
                    yield row


# ---- split and statistics -----------------------------------------------------------------

def validation_mask(ids: Any, prop: float) -> np.ndarray:
    """Which pieces (ids: a list, numpy array or pyarrow array) are in the validation split, as a bool array.
    A piece is when the first 32 bits of its id, as a fraction, are below `prop`: a function of the id alone,
    so the split is stable as the corpus grows."""
    if hasattr(ids, "to_pylist"):
        ids = ids.to_pylist()
    keys = np.fromiter((int(str(i)[:8], 16) for i in ids), dtype=np.uint64, count=len(ids))
    return keys / 2**32 < prop


def char_frequencies(source: pa.Table | str) -> np.ndarray:
    """Counts [95] of each printable character (code order) over all texts; newlines are not counted."""
    table = read_table(source, columns=["text"]) if isinstance(source, str) else source
    counts = np.zeros(charset.NUM_CHARS, dtype=np.int64)
    for chunk in table.column("text").chunks:
        data = "".join(chunk.to_pylist()).encode("ascii")
        codes = np.frombuffer(data, dtype=np.uint8)
        counts += np.bincount(codes[codes >= 32] - 32, minlength=charset.NUM_CHARS)[:charset.NUM_CHARS]
    return counts


SIZE_BUCKETS = (8, 16, 32, 64)


def size_histogram(values: np.ndarray, edges: tuple[int, ...] = SIZE_BUCKETS) -> dict[str, int]:
    """Counts of `values` in buckets 1-8, 9-16, 17-32, 33-64, >64 (the edges are inclusive upper bounds)."""
    out: dict[str, int] = {}
    low = 1
    for high in edges:
        out[f"{low}-{high}"] = int(((values >= low) & (values <= high)).sum())
        low = high + 1
    out[f">{edges[-1]}"] = int((values > edges[-1]).sum())
    return out


def stats(uri: str) -> dict:
    """What a corpus holds: counts, sources, labels, sizes, characters, and what the build rejected."""
    manifest = read_manifest(uri)
    table = read_table(uri, columns=["text", "height", "width", "labels", "source"])
    heights = table.column("height").to_numpy()
    widths = table.column("width").to_numpy()
    labels = collections.Counter(label for row in table.column("labels").to_pylist() for label in row)
    freq = char_frequencies(table)
    return {
        "uri": uri,
        "rows": table.num_rows,
        "shards": manifest["shards"],
        "built_at": manifest.get("built_at", ""),
        "sources": dict(collections.Counter(table.column("source").to_pylist()).most_common()),
        "labels": dict(labels.most_common()),
        "height": size_histogram(heights),
        "width": size_histogram(widths),
        "chars": {charset.ALPHABET[i]: int(freq[i]) for i in np.argsort(-freq, kind="stable") if freq[i]},
        "rejected": manifest.get("rejected", {}),
        "limits": manifest.get("limits", {}),
    }


# ---- raw inputs -----------------------------------------------------------------------------

def is_corpus(uri: str) -> bool:
    """True when `uri` holds a built corpus (its manifest), not raw pieces."""
    return storage.exists(storage.join(uri, MANIFEST))


def build_from(raw: str, out: str) -> dict:
    """Clean the raw pieces under `raw` (a folder of .txt files, .jsonl files) into a corpus at `out`;
    its manifest, with the rejected counts. A folder with no usable piece is a UserError."""
    builder = CorpusBuilder()
    ingest(builder, raw)
    if not builder.accepted:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(builder.rejected.items())) or "no .txt or .jsonl file"
        raise UserError(f"--corpus {raw}: no usable piece ({reasons}); pass a folder of .txt files of printable "
                        f"ASCII art, or a corpus from `asciiray corpus build`")
    return builder.write(out)


def ingest(builder: CorpusBuilder, path: str) -> None:
    """Feed every raw piece under `path` to `builder`.

    `path` (local or s3://) may be: a corpus (it has a manifest.json), a
    `.jsonl` file of raw pieces as our spiders write them, a `.txt` file (one
    piece, no labels), or a directory of `.txt` files in category folders
    (labels = the folder path below `path`) and/or `.jsonl` files. Files are
    read in sorted path order so that builds are reproducible.
    """
    found = storage.kind(path)
    if found is None:
        raise UserError(f"{path} does not exist: pass a folder of .txt files, a .jsonl file or a corpus directory")
    if found == "file":
        if path.rstrip("/").endswith(".jsonl"):
            _ingest_jsonl(builder, path)
        elif path.rstrip("/").endswith(".txt"):
            _ingest_txt(builder, path, [])
        else:
            raise UserError(f"{path}: not a .jsonl or .txt file; pass a .jsonl file, a folder or a corpus")
        return
    if storage.exists(storage.join(path, MANIFEST)):
        for row in iter_pieces(path):
            builder.add(row["text"], row["labels"], row["source"], row["url"], row["caption"])
        return
    ignored = 0
    for rel, size in storage.walk_files(path):
        parts = rel.split("/")
        if any(part.startswith(".") for part in parts):
            continue
        if rel.endswith(".txt") and size > RAW_BYTES_PER_PIECE * builder.limits.max_bytes:
            builder.reject("too_large")  # counted like any piece over --max-bytes, without reading it
        elif rel.endswith(".txt"):
            _ingest_txt(builder, storage.join(path, rel), parts[:-1])
        elif rel.endswith(".jsonl"):
            _ingest_jsonl(builder, storage.join(path, rel))
        else:
            ignored += 1
    if ignored:
        log.info("%s: ignored %d file(s) that are neither .txt nor .jsonl", path, ignored)


def _ingest_txt(builder: CorpusBuilder, uri: str, labels: list[str]) -> None:
    builder.add(storage.read_bytes(uri), labels, "files")


def _ingest_jsonl(builder: CorpusBuilder, uri: str) -> None:
    """One raw piece per line: {"text", "labels", "source", "url", "caption"}; bad lines are counted."""
    for line in storage.read_bytes(uri).split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except UnicodeDecodeError:
            builder.reject("invalid_utf8")
            continue
        except ValueError:
            builder.reject("bad_record")
            continue
        fields = _record_fields(record)
        if fields is None:
            builder.reject("bad_record")
            continue
        builder.add(*fields)


def _record_fields(record: Any) -> tuple[str, list[str], str, str, str] | None:
    """(text, labels, source, url, caption) of a raw record, or None if it is malformed."""
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        return None
    labels = record.get("labels") or []
    if isinstance(labels, str):
        labels = [labels]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        return None
    strings = [record.get(k) or "" for k in ("source", "url", "caption")]
    if not all(isinstance(s, str) for s in strings):
        return None
    source, url, caption = strings
    return record["text"], labels, source or "unknown", url, caption
