"""What clusters do to runs: damaged checkpoints, killed drivers, storage outages (docs/RELIABILITY.md).

The checkpoint checks run without Ray. The rest are real runs: the suite's local
Ray for damaged checkpoints on resume and on a worker restart; `asciiray train`
subprocesses with Ray of their own for a killed driver and for S3 outages, which
a switchable loopback proxy in front of the suite's S3 server produces (a real
outage for the client, while the server keeps its buckets). Every wait is on
observable state with a deadline; every process a test starts carries a marker
variable and is killed by it afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch

from asciiray import storage
from asciiray.cli import main
from asciiray.errors import UserError
from asciiray.train import checkpoint

ROOT = Path(__file__).resolve().parents[1]
MARKER = "ASCIIRAY_TEST_RELIABILITY"


def tiny_vae_checkpoint(directory: Path, epoch: int = 1, **meta) -> Path:
    """A real (untrained) tiny VAE written as a checkpoint of `epoch`, with optimizer state."""
    from asciiray.models import VAE, get_preset

    cfg = get_preset("tiny")
    torch.manual_seed(epoch)
    model = VAE(cfg)
    optimizer = torch.optim.Adam(model.parameters())
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint.save(directory, model, {"kind": "vae", "model": dataclasses.asdict(cfg), "epoch": epoch,
                                       "config": {"validation_prop": 0.1, "font_res": 2}, "corpus": "", **meta},
                    {"optimizer": optimizer.state_dict()})
    return directory


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "tampered weights": (lambda d: flip_byte(d / checkpoint.MODEL_FILE), "model.safetensors does not match"),
    "truncated state": (lambda d: truncate(d / checkpoint.STATE_FILE), "state.pt is"),
    "missing state": (lambda d: (d / checkpoint.STATE_FILE).unlink(), "state.pt is missing"),
    "no meta.json": (lambda d: (d / checkpoint.META_FILE).unlink(), "incomplete: it has no meta.json"),
    "cut meta.json": (lambda d: truncate(d / checkpoint.META_FILE), "meta.json is unreadable"),
}


# --- checkpoint integrity, without Ray --------------------------------------------------------------

def test_a_saved_checkpoint_lists_its_files_and_verifies(tmp_path):
    ckpt = tiny_vae_checkpoint(tmp_path / "checkpoint_a")
    meta = json.loads((ckpt / checkpoint.META_FILE).read_text())
    assert meta["format"] == checkpoint.FORMAT
    assert set(meta["files"]) == {checkpoint.MODEL_FILE, checkpoint.STATE_FILE}
    assert meta["files"][checkpoint.MODEL_FILE]["size"] == (ckpt / checkpoint.MODEL_FILE).stat().st_size
    assert checkpoint.verify(ckpt)["epoch"] == 1
    assert sorted(p.name for p in ckpt.iterdir()) == [checkpoint.META_FILE, checkpoint.MODEL_FILE,
                                                      checkpoint.STATE_FILE], "no leftover partial file"


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_checkpoint_is_refused_in_one_line(kind, tmp_path, capsys):
    damage, message = DAMAGE[kind]
    ckpt = tiny_vae_checkpoint(tmp_path / "checkpoint_a")
    damage(ckpt)
    with pytest.raises(checkpoint.Damaged, match=message) as err:
        checkpoint.verify(ckpt)
    assert str(ckpt) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(checkpoint.Damaged, match=message):
        with checkpoint.opened(str(ckpt)):
            pass

    piece = tmp_path / "piece.txt"
    piece.write_text("+---+\n| a |\n+---+\n")
    assert main(["reconstruct", str(ckpt), str(piece)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asciiray: error: checkpoint ") and message in lines[0], lines
    assert str(ckpt) in lines[0] and "input | reconstruction" not in captured.out


def test_a_run_directory_stands_for_its_newest_complete_checkpoint(tmp_path, caplog):
    run = tmp_path / "run"
    for epoch in (1, 2, 3):
        tiny_vae_checkpoint(run / f"checkpoint_2026-01-0{epoch}_00-00-00.000000", epoch)
    newest = run / "checkpoint_2026-01-03_00-00-00.000000"
    flip_byte(newest / checkpoint.MODEL_FILE)
    (run / "checkpoint_2026-01-04_00-00-00.000000").mkdir()  # an upload cut short: no meta.json yet
    with caplog.at_level(logging.WARNING, logger="asciiray"):
        with checkpoint.opened(str(run)) as d:
            assert checkpoint.load_meta(d)["epoch"] == 2
    skipped = [r.getMessage() for r in caplog.records if "skipping it" in r.getMessage()]
    assert len(skipped) == 2 and "2026-01-04" in skipped[0] and "2026-01-03" in skipped[1]
    assert checkpoint.latest_in(str(run)).endswith("checkpoint_2026-01-02_00-00-00.000000")

    piece = tmp_path / "piece.txt"
    piece.write_text("+---+\n| a |\n+---+\n")
    assert main(["reconstruct", str(run), str(piece)]) == 0

    for epoch in (1, 2):
        truncate(run / f"checkpoint_2026-01-0{epoch}_00-00-00.000000" / checkpoint.MODEL_FILE)
    with pytest.raises(checkpoint.Damaged, match="has no complete checkpoint"):
        checkpoint.latest_in(str(run))


def test_resuming_falls_back_past_damaged_checkpoints_but_not_past_the_offered_one(tmp_path, caplog):
    run = tmp_path / "run"
    names = [f"checkpoint_2026-01-0{e}_00-00-00.000000" for e in (1, 2, 3, 4)]
    for epoch, name in enumerate(names, 1):
        tiny_vae_checkpoint(run / name, epoch)
    with checkpoint.resumed(str(run), None, announce=True) as d:
        assert d is None, "nothing offered: a fresh start"
    # Ray offers epoch 3 (epoch 4 was written by a process it never heard from): that is the one used.
    with checkpoint.resumed(str(run), str(run / names[2]), announce=True) as d:
        assert checkpoint.load_meta(d)["epoch"] == 3
    DAMAGE["tampered weights"][0](run / names[2])
    DAMAGE["no meta.json"][0](run / names[1])
    with caplog.at_level(logging.WARNING, logger="asciiray"):
        with checkpoint.resumed(str(run), str(run / names[2]), announce=True) as d:
            assert checkpoint.load_meta(d)["epoch"] == 1
    assert [r.getMessage().split(" is ")[0] for r in caplog.records] == [
        f"checkpoint {run / names[2]}", f"checkpoint {run / names[1]}"]
    caplog.clear()
    with checkpoint.resumed(str(run), str(run / names[2]), announce=False):
        assert not caplog.records, "only the announcing worker warns"


def test_newer_format_is_refused_and_legacy_checkpoints_load_with_a_warning(tmp_path, caplog):
    ckpt = tiny_vae_checkpoint(tmp_path / "new")
    meta = json.loads((ckpt / checkpoint.META_FILE).read_text())
    (ckpt / checkpoint.META_FILE).write_text(json.dumps({**meta, "format": checkpoint.FORMAT + 1}))
    with pytest.raises(UserError, match="written by a newer asciiray") as err:
        checkpoint.verify(ckpt)
    assert not isinstance(err.value, checkpoint.Damaged), "a newer checkpoint is not skipped as damaged"

    legacy = tiny_vae_checkpoint(tmp_path / "old")
    meta = json.loads((legacy / checkpoint.META_FILE).read_text())
    del meta["format"], meta["files"]
    (legacy / checkpoint.META_FILE).write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="asciiray"):
        from asciiray.train import vae

        model, loaded = vae.load(str(legacy))
    assert loaded["epoch"] == 1
    assert any("written by an older asciiray" in r.getMessage() for r in caplog.records)


def test_the_uploader_writes_a_checkpoint_that_verifies(tmp_path):
    import ray.train

    ckpt = tiny_vae_checkpoint(tmp_path / "local")
    run = tmp_path / "run"
    stored = checkpoint.uploader(str(run))(ray.train.Checkpoint.from_directory(str(ckpt)), "checkpoint_x")
    assert checkpoint.uri_of(stored) == str(run / "checkpoint_x")
    assert checkpoint.verify(run / "checkpoint_x")["epoch"] == 1
