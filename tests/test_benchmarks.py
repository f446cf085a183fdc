"""The benchmark scripts still run: their --smoke mode goes through the same code paths on CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_gpu_check_smoke_prints_its_table(ray_session):
    # Its Ray path joins the suite's Ray instead of starting one of its own.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    for row in ("plain loop", "Ray / plain", "data wait share", "host syncs per step", "renderer training steps/s",
                "top kernel 1", "plain loop, --compile", "plain loop, 96-channel head"):
        assert row in out.stdout, out.stdout
    assert 0 < figure(out.stdout, "plain loop (loop's TrainStep, from memory)", "samples/s")
    assert 0 < figure(out.stdout, "Ray / plain") < 100, "a rate far beyond the plain loop's is a broken timer"
    assert 0 <= figure(out.stdout, "Ray path data wait share", "%") <= 100
    assert 0 < figure(out.stdout, "renderer training steps/s")


def figure(table: str, row: str, unit: str = "") -> float:
    """The number that opens the value of `row` in a printed table of `row  value` lines."""
    match = re.search(rf"^{re.escape(row)}\s+([0-9.]+)\s*{re.escape(unit)}", table, re.MULTILINE)
    assert match, f"no figure in {unit or 'the'} row {row!r}:\n{table}"
    return float(match.group(1))


def test_collapse_check_smoke_scores_real_art():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "collapse_check.py"), "--smoke"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["steps"] == 3 and result["val_pieces"] > 0
    for figure in ("val_ink_f1", "val_ink_recall", "val_near_collapse", "val_space_collapse"):
        assert 0.0 <= result[figure] <= 1.0, (figure, result)
    assert result["holds"] == (result["val_near_collapse"] <= 0.05)
