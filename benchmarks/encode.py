"""Encoding pieces to grids: `charset.encode` piece by piece vs `charset.encode_many`, side by side.

Both encode the same pieces of a corpus (by default every piece of the
embedded corpus that fits the grid) in this one process and thread,
alternating round by round so that machine noise hits both alike; prints
pieces/s per round, the medians and their ratio, and checks that both give
the same bytes.

    .venv/bin/python benchmarks/encode.py
    .venv/bin/python benchmarks/encode.py --corpus s3://bucket/corpus --grid 64 --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from asciiray import charset, corpus
from asciiray.embedded import DEFAULT_CORPUS


def per_piece(texts: list[str], grid: int) -> np.ndarray:
    """What the Ray Data map did before encode_many: one `encode` call per piece."""
    codes = np.zeros((len(texts), grid, grid), dtype=np.uint8)
    for i, text in enumerate(texts):
        codes[i] = charset.encode(text, grid)
    return codes


def rate(encode, texts: list[str], grid: int, batch: int) -> tuple[float, np.ndarray]:
    """Pieces/s of `encode` over `texts` in batches of `batch` (as Ray Data hands them to the map)."""
    started = time.perf_counter()
    out = [encode(texts[i:i + batch], grid) for i in range(0, len(texts), batch)]
    return len(texts) / (time.perf_counter() - started), np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--grid", type=int, default=charset.DEFAULT_GRID)
    parser.add_argument("--batch", type=int, default=1024, help="pieces per call, like a Ray Data batch")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    table = corpus.read_table(args.corpus, columns=["text", "height", "width"])
    texts = [t for t, h, w in zip(table["text"].to_pylist(), table["height"].to_pylist(), table["width"].to_pylist())
             if h <= args.grid and w <= args.grid]
    print(f"{len(texts)} pieces of {args.corpus} fit {args.grid}x{args.grid}; batches of {args.batch}")
    old, new = [], []
    for r in range(args.rounds):
        old_rate, old_codes = rate(per_piece, texts, args.grid, args.batch)
        new_rate, new_codes = rate(charset.encode_many, texts, args.grid, args.batch)
        if not np.array_equal(old_codes, new_codes):
            raise SystemExit("encode_many and encode disagree")
        old.append(old_rate)
        new.append(new_rate)
        print(f"round {r + 1}: encode {old_rate:,.0f} pieces/s, encode_many {new_rate:,.0f} pieces/s")
    print(f"median: encode {statistics.median(old):,.0f} pieces/s, encode_many {statistics.median(new):,.0f} "
          f"pieces/s, ratio {statistics.median(new) / statistics.median(old):.1f}x (same bytes)")


if __name__ == "__main__":
    main()
