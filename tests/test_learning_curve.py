"""benchmarks/learning_curve.py: its smoke run writes the table and picture, and a stopped run resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "learning_curve.py"


def curve(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.integration
def test_learning_curve_smoke_stops_resumes_and_reports(tmp_path):
    # Stopped by its time limit after its first step: a scored point, the state and a checkpoint are saved.
    curve(tmp_path, "--recipe", "default", "--time-limit", "1e-6")
    rows = [json.loads(line) for line in (tmp_path / "default" / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]
    assert (tmp_path / "default" / "state.pt").exists() and (tmp_path / "default" / "checkpoint").exists()
    # --report-only writes the table of what is recorded so far, and trains nothing.
    curve(tmp_path, "--recipe", "default", "--report-only")
    assert (tmp_path / "curves.md").read_text().count("| default |") == 1
    assert len((tmp_path / "default" / "curve.jsonl").read_text().splitlines()) == 1

    # Started again, it continues from step 1 to the budget (1,024 samples of batch 64: 16 steps) and reports.
    out = curve(tmp_path, "--recipe", "default")
    rows = [json.loads(line) for line in (tmp_path / "default" / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 8, 11, 16]
    assert [r["samples"] for r in rows] == [64, 512, 704, 1024]
    for r in rows:
        for key in ("val/ink_f1", "val/near_collapse", "train/ink_f1", "train/near_collapse"):
            assert 0.0 <= r[key] <= 1.0
    assert rows[-1]["seconds"] >= rows[0]["seconds"] > 0
    table = (tmp_path / "curves.md").read_text()
    assert table.count("| default |") == 4 and table in out.stdout
    assert (tmp_path / "curves.png").stat().st_size > 10_000


@pytest.mark.integration
def test_the_state_is_saved_between_points(tmp_path):
    """--save-every 0 saves after every step that is not a scoring point (16 steps, points 8, 11 and 16)."""
    done = curve(tmp_path, "--recipe", "default", "--save-every", "0")
    saved = [int(line.rsplit(" ", 1)[1]) for line in done.stderr.splitlines() if "state saved at step" in line]
    assert saved == [1, 2, 3, 4, 5, 6, 7, 9, 10, 12, 13, 14, 15]
    rows = [json.loads(line) for line in (tmp_path / "default" / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [8, 11, 16]
