"""The shipped FIGlet corpus: present, large enough, fits the grid, and rebuilt byte for byte."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from asciiray import charset, corpus
from asciiray.embedded import DEFAULT_CORPUS, build_embedded


def test_shipped_corpus_is_there_and_fits_the_grid():
    manifest = corpus.read_manifest(DEFAULT_CORPUS)
    table = corpus.read_table(DEFAULT_CORPUS)
    assert table.num_rows == manifest["rows"] > 5000
    assert manifest["sources"] == {"figlet": table.num_rows}
    assert pc.max(table["height"]).as_py() <= charset.DEFAULT_GRID
    assert pc.max(table["width"]).as_py() <= charset.DEFAULT_GRID
    assert all(labels[0] == "figlet" and len(labels) >= 2 for labels in table["labels"].to_pylist())
    assert (Path(DEFAULT_CORPUS) / "part-00000.parquet").stat().st_size < 3_000_000


def test_rebuild_is_byte_identical(tmp_path):
    manifest = build_embedded(str(tmp_path))
    shipped = corpus.read_manifest(DEFAULT_CORPUS)
    assert {k: manifest[k] for k in ("rows", "shards", "rejected")} == \
        {k: shipped[k] for k in ("rows", "shards", "rejected")}
    for shard in corpus.shard_uris(DEFAULT_CORPUS):
        name = shard.rsplit("/", 1)[1]
        assert (tmp_path / name).read_bytes() == Path(shard).read_bytes(), name
