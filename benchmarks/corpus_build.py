"""Cleaning throughput of `asciiray corpus build`: pieces/s for ingest + clean + dedup + write.

Generates N synthetic raw pieces (seeded, so every run cleans the same input)
as JSONL files the way the spiders write them: varied sizes, about 5% invalid
(tabs, non-ASCII, too small, over the grid, malformed lines) and about 5%
duplicates. Then times the real command in a fresh process, start-up included.

    .venv/bin/python benchmarks/corpus_build.py               # 50,000 pieces, 3 runs
    .venv/bin/python benchmarks/corpus_build.py -n 200000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ART_CHARS = np.frombuffer(b" " * 40 + b"_-|/\\()'.`,:;<>=+*#@o0O8xX^~\"", dtype=np.uint8)


def synthetic_piece(rng: np.random.Generator) -> str:
    """A random block of art-like characters, 3-48 lines of up to 62 columns, ragged right edge."""
    height, width = int(rng.integers(3, 49)), int(rng.integers(10, 63))
    cells = ART_CHARS[rng.integers(0, len(ART_CHARS), size=(height, width))]
    lengths = rng.integers(width // 2, width + 1, size=height)
    return "\n".join(row[:n].tobytes().decode("ascii") for row, n in zip(cells, lengths))


def raw_records(n: int, seed: int) -> list[str]:
    """n JSONL lines: mostly valid pieces, some invalid ones, some exact or whitespace-only duplicates."""
    rng = np.random.default_rng(seed)
    lines: list[str] = []
    texts: list[str] = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.05 and texts:
            text = texts[int(rng.integers(0, len(texts)))] + "\n  \n"
        else:
            text = synthetic_piece(rng)
            texts.append(text)
            if kind < 0.06:
                text = text.replace(" ", "\t", 1)
            elif kind < 0.07:
                text += "\n\u00e9t\u00e9"
            elif kind < 0.08:
                text = "x\ny"
            elif kind < 0.09:
                text = "\n".join(["#" * 70] * 5)
            elif kind < 0.095:
                lines.append('{"text": broken')
                continue
        record = {"text": text, "labels": ["synthetic", f"c{i % 20}"], "source": "bench",
                  "url": f"http://example.invalid/{i}", "caption": ""}
        lines.append(json.dumps(record))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--pieces", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=10, help="JSONL files to spread the pieces over")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        lines = raw_records(args.pieces, args.seed)
        per_file = -(-len(lines) // args.files)
        for f in range(args.files):
            chunk = lines[f * per_file:(f + 1) * per_file]
            (raw / f"part-{f:03d}.jsonl").write_text("\n".join(chunk) + "\n")
        size_mb = sum(p.stat().st_size for p in raw.iterdir()) / 1e6
        print(f"{args.pieces} raw pieces, {size_mb:.1f} MB of JSONL in {args.files} files")

        cmd = [sys.executable, "-m", "asciiray", "corpus", "build", str(raw), "--out", str(Path(tmp) / "corpus")]
        seconds = []
        for run in range(args.repeats):
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            seconds.append(time.perf_counter() - start)
            if done.returncode != 0:
                sys.exit(f"corpus build failed:\n{done.stderr}")
            print(f"run {run + 1}: {seconds[-1]:.2f} s, {args.pieces / seconds[-1]:,.0f} pieces/s")
        print(done.stdout.strip())
        best, median = min(seconds), statistics.median(seconds)
        print(f"\ncorpus build: {args.pieces / median:,.0f} pieces/s median, {args.pieces / best:,.0f} best "
              f"({median:.2f} s median for {args.pieces} pieces, process start-up included)")


if __name__ == "__main__":
    main()
