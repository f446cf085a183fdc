"""`asciiray train` options refused on the driver, before Ray starts: run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.integration
def test_a_renderer_without_gradients_is_refused_before_ray(tmp_path):
    runs = tmp_path / "runs"
    # An address where no Ray listens: had the check come after Ray, the error would be about the address.
    out = subprocess.run([sys.executable, "-m", "asciiray", "train", "--renderer", "discrete", "--storage-path",
                          str(runs), "--run-name", "r", "--address", "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert out.returncode == 2
    err = out.stderr.strip()
    assert "\n" not in err, err
    assert err.startswith("asciiray: error: --renderer 'discrete'") and "continuous" in err
    assert not (runs / "r").exists(), "a rejected command leaves no run behind"
