"""The neural font renderer: its training data, `asciiray train-renderer` on real Ray, and its use in the VAE."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from asciiray import charset, checkpoint, data, storage
from asciiray.charset import NUM_CHARS
from asciiray.cli import main
from asciiray.errors import UserError
from asciiray.models import NeuralRenderer, get_renderer_preset, one_hot
from asciiray.render import glyph_atlas, render_codes
from asciiray.train.checkpoint import save
from asciiray.models import make_renderer
from asciiray.train.renderer import image_errors, perturb, random_codes, target_image
from tests.conftest import make_pieces, write_corpus


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> str:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "pieces", make_pieces(1200, seed=1))


@pytest.fixture(scope="module")
def trained(corpus_dir, tmp_path_factory, ray_session) -> str:
    """A tiny renderer trained by the CLI on 2 DDP workers for ~270 steps; returns its run directory."""
    runs = tmp_path_factory.mktemp("runs")
    argv = ["train-renderer", "--preset", "tiny", "--corpus", corpus_dir, "--storage-path", str(runs),
            "--run-name", "r", "--num-workers", "2", "--cpus-per-worker", "0.5", "--threads", "1",
            "-b", "8", "-n", "4"]
    assert main(argv) == 0
    return str(runs / "r")


def save_tiny_renderer(directory, **changes) -> NeuralRenderer:
    """An untrained tiny renderer written as a checkpoint whose meta.json holds `changes`."""
    torch.manual_seed(0)
    cfg = get_renderer_preset("tiny")
    model = NeuralRenderer(cfg)
    save(directory, model, {"kind": "renderer", "model": {**dataclasses.asdict(cfg), **changes}})
    return model


def val_codes(corpus: str) -> torch.Tensor:
    pieces = data.validation_pieces(corpus, 16, 0.1, 10_000)
    return torch.from_numpy(np.stack([charset.encode(t, 16) for t in pieces]))


def vae_job(**kw):
    """What a VAE worker gets from the driver, for a tiny model and a uniform character histogram."""
    from asciiray.config import build
    from asciiray.data import CorpusPlan
    from asciiray.train.job import Job
    from asciiray.train.options import TrainConfig

    cfg = build(TrainConfig, {"preset": "tiny", "font_res": 2, **kw})
    plan = CorpusPlan(uri="", rows=0, fitting=0, over_grid=0, train=0, val=0, char_freq=[1.0] * NUM_CHARS)
    return Job(kind="vae", cfg=cfg, run_uri="", precision="32", plan=plan)


def test_perturbed_inputs_are_distributions_around_the_codes():
    g = torch.Generator().manual_seed(0)
    codes = random_codes(8, 16, "cpu", g)
    assert codes.dtype == torch.uint8 and 0 <= int(codes.min()) and int(codes.max()) < NUM_CHARS
    assert torch.equal(perturb(codes, 1.0, 0.1, 3.0, g), one_hot(codes))
    soft = perturb(codes, 0.0, 0.1, 3.0, g)
    assert torch.allclose(soft.sum(1), torch.ones(8, 16, 16), atol=1e-5) and soft.min() >= 0
    assert (soft.max(1).values < 1).float().mean() > 0.95, "cells are perturbed (a few saturate at low temperature)"
    kept = (soft.argmax(1) == codes.long()).float().mean()
    assert 0.6 < kept < 0.98, "most cells keep their character, noise flips some"
    assert torch.equal(target_image(soft, glyph_atlas(2), "discrete"), render_codes(soft.argmax(1), glyph_atlas(2)))
    g1, g2 = (torch.Generator().manual_seed(5) for _ in range(2))
    assert torch.equal(perturb(codes, 0.0, 0.1, 3.0, g1), perturb(codes, 0.0, 0.1, 3.0, g2))


def test_renderer_shapes_and_frozen_loading(tmp_path, s3_bucket):
    model = save_tiny_renderer(tmp_path)
    probs = perturb(random_codes(2, 16, "cpu"), 0.5, 0.1, 3.0)
    image = model(probs)
    assert image.shape == (2, 32, 32) and 0 <= image.min() and image.max() <= 1

    storage.copy_dir(str(tmp_path), f"s3://{s3_bucket}/renderer")
    for source in (str(tmp_path), f"s3://{s3_bucket}/renderer"):
        loaded = make_renderer(f"neural:{source}", 2, 1.0, grid=16)
        assert loaded.differentiable and loaded.font_res == 2 and not loaded.training
        assert not any(p.requires_grad for p in loaded.parameters())
        assert torch.equal(loaded(probs), image.detach())


def test_gradients_reach_the_decoder_through_the_frozen_renderer(tmp_path):
    from asciiray.losses import compute_losses
    from asciiray.models import VAE, get_preset

    save_tiny_renderer(tmp_path)
    renderer = make_renderer(f"neural:{tmp_path}", 2, 1.0, grid=16)
    vae = VAE(get_preset("tiny"))
    codes = torch.from_numpy(np.stack([charset.encode(t, 16) for t in make_pieces(4)]))
    terms = compute_losses(vae(codes), codes, renderer=renderer, kl_coeff=0.0, ce_recon_loss_scale=0.0,
                           image_recon_loss_coeff=1.0)
    terms["loss"].backward()
    head = vae.decoder[-1].weight.grad
    assert head is not None and torch.isfinite(head).all() and head.abs().sum() > 0
    assert all(p.grad is None for p in renderer.parameters())


def test_optimizer_steps_leave_the_frozen_renderer_bit_identical(tmp_path):
    """What the shared loop does in a VAE epoch: Adam over the model's trainable parameters, nothing else."""
    from asciiray.train.vae_task import VAETask

    save_tiny_renderer(tmp_path)
    task = VAETask(vae_job(renderer=f"neural:{tmp_path}", image_recon_loss_coeff=1.0), torch.device("cpu"))
    model = task.build_model().train()
    params = [p for p in model.parameters() if p.requires_grad]
    assert not {id(p) for p in params} & {id(p) for p in task.renderer.parameters()}
    optimizer = torch.optim.Adam(params, lr=1.0)
    codes = torch.from_numpy(np.stack([charset.encode(t, 16) for t in make_pieces(16)]))
    for _ in range(3):
        loss, _ = task.step(model, codes, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    saved = load_file(str(tmp_path / checkpoint.MODEL_FILE))
    assert saved.keys() == task.renderer.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in task.renderer.state_dict().items())
    assert not task.renderer.training


def test_wrong_renderer_checkpoints_are_clear_errors(tmp_path, capsys):
    good = tmp_path / "good"
    good.mkdir()
    save_tiny_renderer(good)
    with pytest.raises(UserError, match="--font-res 2"):
        make_renderer(f"neural:{good}", 4, 1.0)
    with pytest.raises(UserError, match="16x16 grids.*64x64"):
        make_renderer(f"neural:{good}", 2, 1.0, grid=64)
    reshaped = tmp_path / "reshaped"
    reshaped.mkdir()
    save_tiny_renderer(reshaped, channels=32)
    with pytest.raises(UserError, match=r"does not match this model: \S+ has shape"):
        make_renderer(f"neural:{reshaped}", 2, 1.0)
    vae_ckpt = tmp_path / "vae"
    vae_ckpt.mkdir()
    save(vae_ckpt, NeuralRenderer(get_renderer_preset("tiny")), {"kind": "vae"})
    with pytest.raises(UserError, match="not a renderer checkpoint"):
        make_renderer(f"neural:{vae_ckpt}", 2, 1.0)
    with pytest.raises(UserError, match="does not exist"):
        make_renderer(f"neural:{tmp_path / 'missing'}", 2, 1.0)

    # On the command line the mismatch is one line on the driver, before any worker starts.
    assert main(["train", "--preset", "tiny", "--renderer", f"neural:{good}", "--font-res", "4",
                 "--storage-path", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asciiray: error:") and "--font-res 2" in err and "\n" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_two_worker_run_learns_to_draw_held_out_grids(trained, corpus_dir):
    with checkpoint.opened(trained) as d:
        meta = checkpoint.load_meta(d)
    assert meta["kind"] == "renderer" and meta["model"] == dataclasses.asdict(get_renderer_preset("tiny"))
    history = meta["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["step"] >= 200, "a few hundred optimizer steps"
    for name in ("onehot", "soft", "random"):
        assert math.isfinite(history[-1][f"val/psnr_{name}"]) and history[-1][f"val/mse_{name}"] >= 0

    codes = val_codes(corpus_dir)
    atlas = glyph_atlas(2)
    target = render_codes(codes, atlas)
    with torch.no_grad():
        trained_psnr = image_errors(NeuralRenderer.from_checkpoint(trained)(one_hot(codes)), target)[1].mean().item()
        torch.manual_seed(0)
        untrained_psnr = image_errors(NeuralRenderer(get_renderer_preset("tiny"))(one_hot(codes)),
                                      target)[1].mean().item()
    blank_psnr = image_errors(torch.zeros_like(target), target)[1].mean().item()
    assert trained_psnr > max(blank_psnr, untrained_psnr) + 6.0, (trained_psnr, blank_psnr, untrained_psnr)
    assert history[-1]["val/psnr_onehot"] > history[0]["val/psnr_onehot"]


def test_vae_epoch_with_the_neural_renderer_leaves_it_untouched(trained, corpus_dir, tmp_path):
    ckpt = checkpoint.latest_in(trained)
    before = load_file(f"{ckpt}/{checkpoint.MODEL_FILE}")
    assert main(["train", "--preset", "tiny", "--corpus", corpus_dir, "--renderer", f"neural:{ckpt}",
                 "--font-res", "2", "--image-recon-loss-coeff", "1.0", "-n", "1", "-b", "32", "--max-pieces", "300",
                 "--num-workers", "2", "--cpus-per-worker", "0.5", "--threads", "1",
                 "--storage-path", str(tmp_path), "--run-name", "vae"]) == 0
    after = load_file(f"{ckpt}/{checkpoint.MODEL_FILE}")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)

    with checkpoint.opened(str(tmp_path / "vae")) as d:
        meta = checkpoint.load_meta(d)
        vae_keys = set(load_file(str(d / checkpoint.MODEL_FILE)))
    assert not vae_keys & set(before), "the renderer is not part of the trained model"
    image = meta["history"][-1]["val/image"]
    assert math.isfinite(image) and image > 0


@pytest.mark.parametrize("argv, message", [
    (["--preset", "huge"], "--preset 'huge' is unknown"),
    (["--random-prop", "1"], "--random-prop"),
    (["--temperature-min", "0"], "--temperature-min"),
    (["--depth", "-2"], "depth"),
])
def test_train_renderer_bad_input_is_one_line(argv, message, tmp_path, capsys):
    # A missing corpus too: were the bad option let through, the run would stop there, not train.
    assert main(["train-renderer", "--storage-path", str(tmp_path), "--corpus", str(tmp_path / "none"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asciiray: error:") and message in err and "\n" not in err
