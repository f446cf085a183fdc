"""Cleaning and storage of raw pieces: append-only JSON Lines shards `pieces-NNNNN.jsonl`.

One JSON object per line with the keys of `RawPiece` (text, labels, source,
url, caption), which is what `asciiray corpus build` ingests.

- Append-only and flushed per line: an interrupted crawl keeps every piece it
  parsed, and each run (a resume included) starts a new shard, so nothing
  already written is ever rewritten. A line cut short by a hard kill is
  truncated away when the next run opens the directory.
- Exact repeats (same source, labels and text: a piece listed twice on a page,
  a page a resumed crawl serves again) are dropped and counted, across runs:
  the keys of the lines already in the directory are loaded on open.
- The same piece under other labels (a textart.io piece under several tags, an
  asciiart.eu piece in two categories) is stored once per label set.
  Merging those into one piece with all its labels is left to
  `asciiray corpus build`, whose de-duplication by content hash merges labels
  across all its inputs anyway; an append-only log cannot merge into a line
  it has already written.
- Cleaning here is only dropping pieces with no visible text (counted as
  `blank`); the text is otherwise kept exactly as shown, since normalisation
  belongs to the corpus build.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import IO, Any

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem

logger = logging.getLogger(__name__)

SHARD_GLOB = "pieces-*.jsonl"


def shard_name(index: int) -> str:
    return f"pieces-{index:05d}.jsonl"


def record_key(record: dict[str, Any]) -> bytes:
    """What makes two records the same piece occurrence: source, labels and exact text."""
    blob = json.dumps([record["source"], list(record["labels"]), record["text"]], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).digest()


def _drop_partial_line(path: Path) -> None:
    """Truncate a last line that has no newline (a write cut short by a hard kill)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        logger.warning("%s: dropping an incomplete last line left by an interrupted run", path)
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


class JsonLinesShards:
    """Item pipeline writing raw pieces under ASCIIRAY_OUT_DIR, ASCIIRAY_SHARD_PIECES lines per shard."""

    def __init__(self, out_dir: str, shard_pieces: int, crawler: Crawler) -> None:
        self.out_dir = Path(out_dir)
        self.shard_pieces = shard_pieces
        self.stats = crawler.stats
        self.seen: set[bytes] = set()
        self.next_index = 0
        self.file: IO[str] | None = None
        self.lines_in_shard = 0

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> JsonLinesShards:
        out_dir = crawler.settings.get("ASCIIRAY_OUT_DIR")
        if not out_dir:
            raise ValueError("set ASCIIRAY_OUT_DIR to the directory the raw piece shards go to")
        return cls(out_dir, crawler.settings.getint("ASCIIRAY_SHARD_PIECES"), crawler)

    def open_spider(self, spider: Any = None) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.out_dir.glob(SHARD_GLOB)):
            _drop_partial_line(path)
            self.next_index = max(self.next_index, int(path.stem.split("-")[1]) + 1)
            with path.open(encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    try:
                        self.seen.add(record_key(json.loads(line)))
                    except (ValueError, KeyError, TypeError):
                        logger.warning("%s:%d: not a raw piece record, ignored for de-duplication", path, number)
        if self.seen:
            logger.info("resuming into %s: %d pieces already stored", self.out_dir, len(self.seen))

    def process_item(self, item: Any, spider: Any = None) -> Any:
        adapter = ItemAdapter(item)
        record = {
            "text": adapter["text"],
            "labels": [str(label) for label in adapter.get("labels") or []],
            "source": adapter["source"],
            "url": adapter.get("url") or "",
            "caption": adapter.get("caption") or "",
        }
        if not record["text"].strip():
            self.stats.inc_value("asciiray/errors/blank")
            raise DropItem(f"blank piece on {record['url']}")
        key = record_key(record)
        if key in self.seen:
            self.stats.inc_value("asciiray/duplicates")
            raise DropItem(f"already stored: piece on {record['url']}", log_level="DEBUG")
        self.seen.add(key)
        self._write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stats.inc_value("asciiray/pieces")
        return item

    def _write(self, line: str) -> None:
        if self.file is None or self.lines_in_shard >= self.shard_pieces:
            self._close_file()
            self.file = (self.out_dir / shard_name(self.next_index)).open("x", encoding="utf-8")
            self.next_index += 1
            self.lines_in_shard = 0
        self.file.write(line)
        self.file.flush()
        self.lines_in_shard += 1

    def _close_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def close_spider(self, spider: Any = None) -> None:
        self._close_file()
