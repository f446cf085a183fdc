"""The recipe options of a run: --init-from, --swa-start/--swa-lr, lr-find and --learning-rate auto."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from safetensors.torch import load_file

from asciiray.cli import main
from tests.conftest import history, train_config as config


def save_checkpoint(directory, kind: str, preset: str) -> str:
    from asciiray.models import VAE, get_preset
    from asciiray.train import checkpoint

    directory.mkdir(parents=True)
    model_config = get_preset(preset)
    checkpoint.save(directory, VAE(model_config), {"kind": kind, "preset": preset,
                                                   "model": dataclasses.asdict(model_config)})
    return str(directory)


def one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asciiray: error:") and "\n" not in err, err
    return err


@pytest.mark.parametrize("flags, message", [
    (["--swa-start", "4", "-n", "4"], "--swa-start 4 must be at least 0 and below --n-epochs 4"),
    (["--swa-start", "1", "-n", "4", "--swa-lr", "0"], "--swa-lr 0.0 must be positive"),
    (["--learning-rate", "-0.1"], "--learning-rate -0.1 must be positive"),
    (["--learning-rate", "fast"], "or one of auto"),
])
def test_bad_run_options_are_one_line_errors(flags, message, tmp_path, capsys):
    assert message in one_line_error(["train", "--storage-path", str(tmp_path / "runs"), *flags], capsys)
    assert not (tmp_path / "runs").exists()


def test_init_from_a_wrong_checkpoint_is_refused_before_ray(tmp_path, capsys):
    small = save_checkpoint(tmp_path / "small", "vae", "small")
    renderer = save_checkpoint(tmp_path / "renderer", "renderer", "tiny")
    runs = str(tmp_path / "runs")
    base = ["train", "--preset", "tiny", "--storage-path", runs, "--run-name", "r", "--address", "127.0.0.1:1"]
    assert "renderer checkpoint" in one_line_error([*base, "--init-from", renderer], capsys)
    err = one_line_error([*base, "--init-from", small], capsys)
    assert "64x64 grids, this run's preset on 16x16" in err and "--preset small" in err
    assert "does not exist" in one_line_error([*base, "--init-from", str(tmp_path / "nothing")], capsys)
    assert "drop one of them" in one_line_error([*base, "--init-from", small, "--resume"], capsys)
    assert not (tmp_path / "runs").exists(), "a rejected command leaves nothing behind"


def test_lr_find_suggests_a_rate_inside_its_range_and_plots_it(tiny_corpus, tmp_path, capsys):
    png = tmp_path / "lr.png"
    assert main(["lr-find", "--preset", "tiny", "--corpus", tiny_corpus, "--font-res", "2", "-b", "16",
                 "--min-lr", "1e-5", "--max-lr", "1", "--steps", "40", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    suggested = float(re.search(r"suggested learning rate: (\S+)", out).group(1))
    assert 1e-5 <= suggested <= 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "--min-lr 0.0" in one_line_error(["lr-find", "--min-lr", "0"], capsys)
    assert "below --max-lr" in one_line_error(["lr-find", "--min-lr", "1", "--max-lr", "0.1"], capsys)


def test_range_test_suggestion_lies_before_the_loss_minimum():
    from asciiray.train import lr_find

    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    model = torch.nn.Linear(4, 1)

    def batches():
        while True:
            for i in torch.randperm(256).split(32):
                yield i

    test = lr_find.range_test(lambda m, i: (m(x[i]).squeeze(1) - y[i]).pow(2).mean(), model, batches(),
                              1e-4, 100.0, 120)
    lowest = test.lrs[min(range(len(test.smoothed)), key=test.smoothed.__getitem__)]
    # Adam moves each weight by about lr per step: 4 weights of size 1-3 need rates of 0.05-1 in 120 steps.
    assert 0.03 <= test.suggestion < lowest
    assert test.diverged, "rates near 100 blow a linear regression up: the test stops early"
    assert len(test.lrs) < 120


@pytest.mark.integration
@pytest.mark.usefixtures("ray_session")
def test_init_from_starts_a_new_run_from_the_weights(learned_run, tiny_corpus, tmp_path):
    from asciiray import checkpoint
    from asciiray.train import vae
    from asciiray.train.checkpoint import load_training_state

    source = learned_run  # a run of the same preset on another corpus
    # Another corpus, batch size, tau schedule and a rate so small that the weights stay where they started.
    cfg = config(tmp_path, tiny_corpus, n_epochs=1, run_name="b", init_from=source, batch_size=32,
                 gumbel_tau_r=0.3, learning_rate=1e-12)
    result = vae.train(cfg)
    assert result.metrics["epoch"] == 1
    run_b = str(tmp_path / "runs" / "b")
    assert [h["epoch"] for h in history(run_b)] == [1], "a new run starts at epoch 0"
    with checkpoint.opened(source) as d:
        before = load_file(str(d / checkpoint.MODEL_FILE))
        source_checkpoint = str(d)
    with checkpoint.opened(run_b) as d:
        after = load_file(str(d / checkpoint.MODEL_FILE))
        meta, state = checkpoint.load_meta(d), load_training_state(d)
    for name, tensor in before.items():
        if "running_" not in name and "num_batches" not in name:
            torch.testing.assert_close(after[name], tensor, rtol=0, atol=1e-6)
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {meta["step"]}, "a fresh optimizer"
    stored = json.loads((tmp_path / "runs" / "b" / "asciiray-run.json").read_text())["config"]
    assert stored["data"]["batch_size"] == 32 and stored["loss"]["gumbel_tau_r"] == 0.3
    assert stored["model"]["init_from"] == source_checkpoint, "the run directory resolved to its checkpoint"


@pytest.mark.integration
@pytest.mark.usefixtures("ray_session")
def test_swa_run_with_auto_learning_rate_resumes_its_average(tiny_corpus, tmp_path, capsys):
    from asciiray import checkpoint
    from asciiray.train.checkpoint import load_training_state

    runs = str(tmp_path / "runs")
    argv = ["train", "--preset", "tiny", "--corpus", tiny_corpus, "-b", "32", "--font-res", "2",
            "--storage-path", runs, "--run-name", "s", "--cpus-per-worker", "0.5", "--threads", "1",
            "--swa-start", "1", "--swa-lr", "1e-3", "--lr-schedule", "constant", "--learning-rate", "auto"]
    assert main([*argv, "-n", "2"]) == 0
    stored = json.loads((tmp_path / "runs" / "s" / "asciiray-run.json").read_text())["config"]
    found = stored["optim"]["learning_rate"]
    assert isinstance(found, float) and 1e-6 <= found <= 1, "the suggestion is recorded in the stored config"
    resume = [a for a in argv if a not in ("--learning-rate", "auto")]
    assert main([*resume, "-n", "3", "--resume"]) == 0
    assert "done: 3 epochs" in capsys.readouterr().out

    dirs = sorted(d for d in (tmp_path / "runs" / "s").glob("checkpoint_*") if d.is_dir())
    states = [load_training_state(d) for d in dirs]
    weights = [load_file(str(d / checkpoint.MODEL_FILE)) for d in dirs]
    metas = [checkpoint.load_meta(d) for d in dirs]
    assert [m["epoch"] for m in metas] == [1, 2, 3]
    assert [int(s["swa"]["averaged"]["n_averaged"]) for s in states] == [0, 1, 2]
    assert [h["lr"] for h in metas[-1]["history"]][0] == pytest.approx(found)
    for name in weights[2]:
        if "running_" in name or "num_batches" in name:
            continue
        # The checkpoint's model file holds the average, which the resumed run continued: (w2 + w3) / 2.
        torch.testing.assert_close(weights[2][name], states[2]["swa"]["averaged"][f"module.{name}"])
        by_hand = (states[1]["swa"]["running"][name] + states[2]["swa"]["running"][name]) / 2
        torch.testing.assert_close(weights[2][name], by_hand)
        torch.testing.assert_close(weights[1][name], states[1]["swa"]["running"][name])
    assert any(not torch.equal(weights[2][n], states[2]["swa"]["running"][n]) for n in weights[2])
