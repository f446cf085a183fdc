"""The VAE: presets, shapes, fp32 log-probabilities, config validation."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from asciiray.charset import NUM_CHARS
from asciiray.errors import UserError
from asciiray.models import PRESETS, VAE, VAEConfig, count_parameters, get_preset, one_hot
from asciiray.models.vae import describe, log_softmax_chars


def codes_for(cfg: VAEConfig, batch: int) -> torch.Tensor:
    return torch.randint(0, NUM_CHARS, (batch, cfg.grid, cfg.grid), dtype=torch.uint8)


@pytest.mark.parametrize("name,batch", [("tiny", 4), ("small", 2), ("seed", 1)])
def test_every_preset_gives_normalised_log_probs(name, batch):
    torch.manual_seed(0)
    cfg = get_preset(name)
    model = VAE(cfg).eval()
    with torch.no_grad():
        logp, mu, logvar = model(codes_for(cfg, batch))
    assert logp.shape == (batch, NUM_CHARS, cfg.grid, cfg.grid)
    assert logp.dtype == torch.float32
    assert torch.allclose(logp.exp().sum(1), torch.ones(batch, cfg.grid, cfg.grid), atol=1e-4)
    assert mu.shape == logvar.shape == (batch, cfg.z_dim)


def test_seed_preset_has_the_prototype_shapes():
    cfg = PRESETS["seed"]
    assert (cfg.grid, cfg.z_dim, cfg.kernel) == (64, 512, 5)
    assert (cfg.decoder_start, cfg.decoder_start_channels) == (8, 8)
    assert cfg.decoder_sizes == [12, 16, 32, 64]
    assert cfg.decoder_channels[-1] == 64 and cfg.head_channels == [NUM_CHARS, NUM_CHARS]
    line = describe("seed")
    count = count_parameters(VAE(cfg))
    assert line == f"seed: grid 64x64, z 512, {count:,} parameters"
    assert 1_000_000 < count < 20_000_000


def test_models_module_prints_every_preset():
    out = subprocess.run([sys.executable, "-m", "asciiray.models"], capture_output=True, text=True, check=True)
    assert [line.split(":")[0] for line in out.stdout.splitlines()] == list(PRESETS)


def test_eval_is_deterministic_and_train_samples():
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    model = VAE(cfg)
    codes = codes_for(cfg, 3)
    model.eval()
    with torch.no_grad():
        a, mu, _ = model(codes)
        b, _, _ = model(codes)
        assert torch.equal(a, b)
        assert torch.allclose(a, torch.log_softmax(model.decode(mu), 1))
        model.train()
        c, _, _ = model(codes)
        d, _, _ = model(codes)
    assert not torch.equal(c, d)


def test_logvar_is_clamped():
    cfg = get_preset("tiny", logvar_min=-1.0, logvar_max=0.5)
    model = VAE(cfg)
    with torch.no_grad():
        model.logvar.bias.fill_(100.0)
        _, _, logvar = model.eval()(codes_for(cfg, 2))
    assert torch.all(logvar == 0.5)


def test_accepts_uint8_and_long_codes_and_rejects_wrong_shapes():
    cfg = get_preset("tiny")
    model = VAE(cfg).eval()
    codes = codes_for(cfg, 2)
    with torch.no_grad():
        assert torch.equal(model(codes)[0], model(codes.long())[0])
        with pytest.raises(ValueError, match=r"\[B, 16, 16\]"):
            model(torch.zeros(2, 8, 8, dtype=torch.uint8))
        with pytest.raises(ValueError, match=r"\[B, 16, 16\]"):
            model(torch.zeros(16, 16, dtype=torch.uint8))
        with pytest.raises(ValueError, match="integer"):
            model(torch.zeros(2, 16, 16))


def test_one_hot_matches_torch():
    codes = codes_for(get_preset("tiny"), 2)
    expected = torch.nn.functional.one_hot(codes.long(), NUM_CHARS).permute(0, 3, 1, 2).float()
    assert torch.equal(one_hot(codes), expected)
    assert one_hot(codes).stride() == expected.stride()
    assert torch.equal(one_hot(codes, torch.bfloat16), expected.bfloat16())


def test_autocast_encoder_input_is_made_in_the_autocast_dtype_with_the_same_result():
    """The bf16 one-hot the encoder makes under autocast gives what a float32 one-hot cast by autocast gave."""
    cfg = get_preset("tiny")
    model = VAE(cfg).eval()
    codes = codes_for(cfg, 2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model.encoder(one_hot(codes)), model.encoder(one_hot(codes, torch.bfloat16)))
        mu, logvar = model.encode(codes)
        h = model.encoder(one_hot(codes))
        assert torch.equal(mu, model.mu(h).float())


def test_log_softmax_chars_in_both_layouts():
    logits = torch.randn(2, NUM_CHARS, 5, 5)
    expected = torch.log_softmax(logits, 1)
    assert torch.allclose(log_softmax_chars(logits), expected)
    channels_last = logits.contiguous(memory_format=torch.channels_last)
    out = log_softmax_chars(channels_last)
    assert torch.allclose(out, expected) and out.is_contiguous(memory_format=torch.channels_last)
    for bf16 in (logits.bfloat16(), channels_last.bfloat16()):  # fp32 out, the same as from an fp32 copy
        out = log_softmax_chars(bf16)
        assert out.dtype == torch.float32 and torch.equal(out, log_softmax_chars(bf16.float()))


def test_embedding_input_equals_a_1x1_conv_on_the_one_hot():
    cfg = get_preset("tiny", embed_dim=4)
    model = VAE(cfg).eval()
    codes = codes_for(cfg, 2)
    with torch.no_grad():
        via_lookup = model.embed(codes.long()).permute(0, 3, 1, 2)
        via_conv = torch.einsum("bcij,cd->bdij", one_hot(codes), model.embed.weight)
        assert torch.allclose(via_lookup, via_conv)
        assert model(codes)[0].shape == (2, NUM_CHARS, 16, 16)


def test_bf16_autocast_forward_returns_fp32():
    cfg = get_preset("tiny")
    model = VAE(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logp, mu, logvar = model(codes_for(cfg, 2))
        samples = model.eval().sample(2)
    assert logp.dtype == mu.dtype == logvar.dtype == samples.dtype == torch.float32
    assert torch.allclose(logp.exp().sum(1), torch.ones(2, 16, 16), atol=1e-4)


def test_sample_shape():
    cfg = get_preset("tiny")
    logp = VAE(cfg).eval().sample(3, "cpu", generator=torch.Generator().manual_seed(1))
    assert logp.shape == (3, NUM_CHARS, 16, 16) and not logp.requires_grad


def test_gradients_reach_every_parameter():
    cfg = get_preset("tiny")
    model = VAE(cfg)
    logp, mu, logvar = model(codes_for(cfg, 4))
    (logp.mean() + mu.sum() + logvar.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("overrides,match", [
    ({"decoder_sizes": [8, 12]}, "grid"),
    ({"decoder_channels": [16]}, "decoder_channels"),
    ({"head_channels": [32]}, "95"),
    ({"kernel": 4}, "odd"),
    ({"logvar_min": 3.0, "logvar_max": 1.0}, "logvar_min"),
    ({"encoder_channels": []}, "encoder_channels"),
    ({"no_such_field": 1}, "no field"),
])
def test_bad_config_raises_user_error(overrides, match):
    with pytest.raises(UserError, match=match):
        get_preset("tiny", **overrides)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(UserError, match="seed, small, tiny"):
        get_preset("huge")


def test_get_preset_copies():
    cfg = get_preset("tiny", z_dim=3)
    cfg.encoder_channels.append(99)
    assert PRESETS["tiny"].z_dim == 16 and 99 not in PRESETS["tiny"].encoder_channels
    assert VAEConfig(**dataclasses.asdict(get_preset("small"))) == PRESETS["small"]
