"""The corpus as Ray Data datasets of uint8 code grids.

The driver scans the small columns (id, height, width) first, so that a corpus
with no usable piece fails before any worker starts and the number of pieces
left out for not fitting the grid is reported, not silently dropped. Ray Data
then reads the text column, encodes each piece to an S x S uint8 grid and
splits train/validation by id, so a piece never changes split when the corpus
grows; a corpus whose grids fit MATERIALIZE_BYTES is encoded once, a larger one
is streamed from its files every epoch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from asciiray import charset, corpus, storage
from asciiray.errors import UserError

log = logging.getLogger(__name__)

# Encoded corpora up to this size are read and encoded once, into Ray's object store, instead of
# streamed from the Parquet files every epoch (docs/PERFORMANCE.md); larger ones stream.
MATERIALIZE_BYTES = 1 << 30
# A bare `asciiray train` takes this many pieces of the embedded corpus: a few minutes on a 2-core CPU.
EMBEDDED_PIECES = 3000


@dataclass
class CorpusPlan:
    """What the driver learned about a corpus before training."""

    uri: str
    rows: int
    fitting: int
    over_grid: int
    train: int
    val: int
    char_freq: list[float]
    id_cutoff: str | None = None

    def grid_counts(self, grid: int) -> list[float]:
        """Character counts [95] of the training pieces as grids: `char_freq` plus the padding spaces."""
        counts = list(self.char_freq)
        counts[charset.SPACE] = self.train * grid * grid - (sum(counts) - counts[charset.SPACE])
        return counts


def subset_key(ids):
    """--max-pieces keeps the pieces with the lowest id suffix: a sample independent of the split (id prefix)."""
    return pc.utf8_slice_codeunits(ids, start=-8)


def sample(table: pa.Table, max_pieces: int) -> pa.Table:
    """The --max-pieces sample of a table of pieces, with its `subset_key` column."""
    return table.append_column("subset_key", subset_key(table["id"])).sort_by("subset_key").slice(0, max_pieces)


def source(uri: str | None, max_pieces: int | None) -> tuple[str, int]:
    """The corpus to read and how many of its pieces to take (0: all).

    No corpus means the embedded one; no max_pieces means all of a given corpus but
    EMBEDDED_PIECES of the embedded one.
    """
    from asciiray.embedded import DEFAULT_CORPUS, resolve

    uri = resolve(uri) or DEFAULT_CORPUS
    if max_pieces is None:
        max_pieces = EMBEDDED_PIECES if uri == DEFAULT_CORPUS else 0
    return uri, max_pieces


def plan(uri: str, grid: int, validation_prop: float, max_pieces: int = 0) -> CorpusPlan:
    """Counts per split and character frequencies of the pieces that fit `grid` (the first `max_pieces`; 0: all)."""
    table = corpus.read_table(uri, columns=["id", "text", "height", "width"])
    if table.num_rows == 0:
        raise UserError(f"corpus {uri} is empty: build one with `asciiray corpus build`")
    fits = pc.and_(pc.less_equal(table["height"], grid), pc.less_equal(table["width"], grid))
    kept = table.filter(fits)
    if kept.num_rows == 0:
        raise UserError(f"corpus {uri}: none of its {table.num_rows} pieces fits a {grid}x{grid} grid; "
                        f"use a preset with a larger grid or another corpus")
    id_cutoff = None
    if max_pieces and max_pieces < kept.num_rows:
        kept = sample(kept, max_pieces)
        id_cutoff = kept["subset_key"][-1].as_py()
    is_val = corpus.validation_mask(kept["id"].to_numpy(zero_copy_only=False), validation_prop)
    n_val = int(is_val.sum())
    if n_val == 0 or n_val == kept.num_rows:
        raise UserError(f"corpus {uri}: --validation-prop {validation_prop} leaves "
                        f"{kept.num_rows - n_val} training and {n_val} validation pieces; "
                        f"use a larger corpus or a proportion between 0 and 1")
    freq = corpus.char_frequencies(kept.filter(pa.array(~is_val)))
    fitting = int(pc.sum(fits).as_py())
    p = CorpusPlan(uri=uri, rows=table.num_rows, fitting=fitting, over_grid=table.num_rows - fitting,
                   train=kept.num_rows - n_val, val=n_val, char_freq=[float(x) for x in freq], id_cutoff=id_cutoff)
    log.info("corpus %s: %d pieces, %d fit the %dx%d grid (%d left out); %d train, %d validation",
             uri, p.rows, p.fitting, grid, grid, p.over_grid, p.train, p.val)
    return p


class _Encode:
    """Ray Data map: keep one split's pieces that fit and encode them to grids."""

    def __init__(self, grid: int, validation_prop: float, want_val: bool, id_cutoff: str | None) -> None:
        self.grid, self.prop, self.want_val, self.id_cutoff = grid, validation_prop, want_val, id_cutoff

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fits = (batch["height"] <= self.grid) & (batch["width"] <= self.grid)
        keep = fits & (corpus.validation_mask(batch["id"], self.prop) == self.want_val)
        if self.id_cutoff is not None:
            keep &= np.asarray(subset_key(pa.array(batch["id"], pa.string()))).astype(str) <= self.id_cutoff
        return {"codes": charset.encode_many(batch["text"][keep], self.grid)}


def datasets(p: CorpusPlan, grid: int, validation_prop: float) -> dict:
    """{'train', 'val'} Ray datasets with one column `codes` (uint8 [grid, grid]); needs a running Ray."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    fs, _ = storage.for_ray(p.uri)
    paths = [storage.for_ray(u)[1] for u in corpus.shard_uris(p.uri)]
    base = ray.data.read_parquet(paths, filesystem=fs, columns=["id", "text", "height", "width"])
    splits = {
        name: base.map_batches(_Encode(grid, validation_prop, name == "val", p.id_cutoff), batch_format="numpy")
        for name in ("train", "val")
    }
    if (p.train + p.val) * grid * grid <= MATERIALIZE_BYTES:
        splits = {name: ds.materialize() for name, ds in splits.items()}
    return splits


def fitting_pieces(uri: str, grid: int, validation_prop: float | None = None, max_pieces: int = 0,
                   training: bool = False) -> pa.Table:
    """The corpus's pieces that fit the grid, in id order: with `max_pieces`, the run's --max-pieces sample
    (`plan`'s); given `validation_prop`, its validation split only (or, `training`, its training split): the
    pieces a run's Ray datasets hold, read on the driver for work done in-process."""
    table = corpus.read_table(uri)
    table = table.filter(pc.and_(pc.less_equal(table["height"], grid), pc.less_equal(table["width"], grid)))
    if max_pieces and max_pieces < table.num_rows:
        table = sample(table, max_pieces)
    if validation_prop is not None:
        mask = corpus.validation_mask(table["id"].to_numpy(zero_copy_only=False), validation_prop)
        table = table.filter(pa.array(~mask if training else mask))
    return table.sort_by("id")


def validation_pieces(uri: str, grid: int, validation_prop: float, n: int, max_pieces: int = 0) -> list[str]:
    """The first `n` (0: all) validation pieces, in id order, that fit the grid: a stable sample to show.

    With `max_pieces`, only those of the run's --max-pieces sample, so they are its validation pieces.
    """
    texts = fitting_pieces(uri, grid, validation_prop, max_pieces)["text"].to_pylist()
    return texts[:n] if n else texts
