"""The model shipped in the package: small, offline, made of data only, and as good as its record says."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from asciiray import pretrained
from asciiray.inference import TrainedVAE


def test_shipped_model_is_data_only_and_small():
    files = {p.name: p for p in pretrained.DIRECTORY.iterdir()}
    assert set(files) == {"config.json", "model.safetensors", "README.md"}  # nothing that could hold code
    assert files["model.safetensors"].stat().st_size <= 4 * 2 ** 20
    with safe_open(str(files["model.safetensors"]), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys() if "num_batches" not in k} == {"F16"}


def test_shipped_model_scores_its_recorded_validation_ink_f1():
    """Loaded by name, offline, on the CPU: its fp16 weights score the figure its training recorded."""
    vae = TrainedVAE.load(pretrained.NAME, "cpu")
    recorded = json.loads((pretrained.DIRECTORY / "config.json").read_text())["training"]["metrics"]
    figures = vae.score(512)
    assert figures["ink_f1"] == pytest.approx(recorded["val/ink_f1"], abs=0.01)
    assert figures["ink_f1"] >= 0.70 and figures["near_collapse"] == 0


def test_init_from_pretrained_is_checked_on_the_driver():
    """`--init-from pretrained` names the shipped model; the default preset has its shapes."""
    from asciiray import config
    from asciiray.train.options import TrainConfig
    from asciiray.train.vae import check_init_from
    from asciiray.train.vae_task import model_config

    cfg = config.build(TrainConfig, {"storage_path": "unused"})
    assert check_init_from(pretrained.NAME, model_config(cfg)) == str(pretrained.DIRECTORY)
