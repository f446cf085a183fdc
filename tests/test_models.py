"""The VAE: presets, shapes, fp32 log-probabilities, config validation."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch

from asciiray.charset import NUM_CHARS
from asciiray.errors import UserError
from asciiray.models import PRESETS, VAE, VAEConfig, count_parameters, get_preset, one_hot
from asciiray.models import vae
from asciiray.models.vae import BatchNorm2d, _Lookup, describe, log_softmax_chars


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


def test_seed_preset_is_the_prototype_architecture():
    cfg = PRESETS["seed"]
    model = VAE(cfg).eval()
    assert (cfg.grid, cfg.z_dim, cfg.kernel, cfg.head_kernel) == (64, 512, 5, 5)
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((type(m).__name__, tuple(o.shape[1:]))))
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm1d))]
    with torch.no_grad():
        model(codes_for(cfg, 2))
    for hook in hooks:
        hook.remove()
    assert shapes == [
        ("Conv2d", (64, 64, 64)), ("Conv2d", (48, 32, 32)), ("Conv2d", (32, 16, 16)),  # 'same', stride 2, stride 2
        ("Conv2d", (16, 12, 12)), ("Conv2d", (8, 8, 8)),  # unpadded: 512 features
        ("Linear", (512,)), ("Linear", (512,)),  # mu, log-variance
        ("Linear", (512,)), ("BatchNorm1d", (512,)),  # decoder linear, ReLU, BatchNorm1d, then 8x8x8
        ("Conv2d", (16, 12, 12)), ("Conv2d", (32, 16, 16)), ("Conv2d", (48, 32, 32)), ("Conv2d", (64, 64, 64)),
        ("Conv2d", (95, 64, 64)), ("Conv2d", (95, 64, 64)),  # head: conv, ReLU, BatchNorm2d, conv
    ]
    # Every ReLU is followed by a BatchNorm; the log-variance head is a plain linear layer.
    layers = [m for m in model.modules() if not isinstance(m, (torch.nn.Sequential, VAE))]
    for relu, after in zip(layers, layers[1:]):
        if isinstance(relu, torch.nn.ReLU):
            assert isinstance(after, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))
    assert sum(isinstance(m, torch.nn.ReLU) for m in layers) == 5 + 1 + 4 + 1
    assert isinstance(model.logvar, torch.nn.Linear)
    # Parameters (weights + biases; BatchNorm: weight + bias, its running statistics are buffers):
    #   encoder convs 95*64*25+64 + 64*48*25+48 + 48*32*25+32 + 32*16*25+16 + 16*8*25+8 = 283,368,
    #     their BatchNorms 2*(64+48+32+16+8) = 336                                     -> 283,704
    #   mu and logvar: 2 * (512*512 + 512)                                               -> 525,312
    #   decoder linear 512*512+512 = 262,656, BatchNorm1d 2*512 = 1,024                  -> 263,680
    #   blocks 8*16*25+16 + 16*32*25+32 + 32*48*25+48 + 48*64*25+64 = 131,360,
    #     their BatchNorms 2*(16+32+48+64) = 320                                         -> 131,680
    #   head 64*95*25+95 = 152,095, BatchNorm2d 2*95 = 190, 95*95*25+95 = 225,720        -> 378,005
    #   total 283,704 + 525,312 + 263,680 + 131,680 + 378,005                            = 1,582,381
    assert count_parameters(model) == 1_582_381
    assert describe("seed") == "seed: grid 64x64, z 512, 1,582,381 parameters"


def test_small_and_tiny_keep_their_shapes():
    assert count_parameters(VAE(PRESETS["small"])) == 275_023
    assert count_parameters(VAE(PRESETS["tiny"])) == 23_631


def test_init_std_draws_weights_from_a_normal():
    torch.manual_seed(0)
    model = VAE(get_preset("seed", init_std=0.02))
    weights = torch.cat([m.weight.flatten() for m in model.modules()
                         if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))])
    assert weights.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert weights.std().item() == pytest.approx(0.02, rel=0.01)
    assert all(m.bias.abs().sum() == 0 for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    default = VAE(get_preset("seed")).mu.weight
    assert default.std().item() == pytest.approx(1 / math.sqrt(3 * 512), rel=0.05), "None: PyTorch's default"


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


def test_the_lookup_gradient_equals_the_embedding_gradient(monkeypatch):
    """The table's gradient summed by scatter_adds over slices of the cells (here 8 pairs, 1 cell, and 997
    pairs, 124 cells and a part slice) equals F.embedding's, repeated rows included."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(95, 8, dtype=torch.float64, generator=g, requires_grad=True)
    index = torch.randint(0, 95, (5000,), generator=g)
    grad = torch.randn(5000, 8, dtype=torch.float64, generator=g)
    (want,) = torch.autograd.grad(torch.nn.functional.embedding(index, weight), weight, grad)
    for pairs in (8, 997, 2 ** 19):
        monkeypatch.setattr(vae, "LOOKUP_PAIRS", pairs)
        (got,) = torch.autograd.grad(_Lookup.apply(weight, index), weight, grad)
        torch.testing.assert_close(got, want)
    assert torch.equal(_Lookup.apply(weight, index), weight[index])


@pytest.mark.parametrize("channels", [8, 16])
def test_batch_norm_in_either_memory_format_computes_the_same(channels):
    """The narrow BatchNorm's NCHW detour gives nn.BatchNorm2d's output, statistics and gradients, and hands
    the layer below its gradient in the input's channels-last format."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, channels, 8, 8, dtype=torch.float64, generator=g).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    ours, plain = BatchNorm2d(channels).double(), torch.nn.BatchNorm2d(channels).double()
    y, want = ours(x), plain(x)
    torch.testing.assert_close(y, want)
    torch.testing.assert_close(ours.running_var, plain.running_var)
    grad = torch.randn(y.shape, dtype=torch.float64, generator=g)
    (got,) = torch.autograd.grad(y, x, grad)
    (expected,) = torch.autograd.grad(want, x, grad)
    torch.testing.assert_close(got, expected)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert ours.state_dict().keys() == plain.state_dict().keys()


def test_bf16_autocast_forward_returns_fp32():
    cfg = get_preset("tiny")
    model = VAE(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logp, mu, logvar = model(codes_for(cfg, 2))
    assert logp.dtype == mu.dtype == logvar.dtype == torch.float32
    assert torch.allclose(logp.exp().sum(1), torch.ones(2, 16, 16), atol=1e-4)


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
    ({"encoder_strides": [1, 2, 2]}, "encoder_strides"),
    ({"encoder_padding": [-1, 0]}, "encoder_padding"),
    ({"encoder_strides": [0, 2]}, "positive"),
    ({"encoder_channels": [8, 8, 8], "encoder_padding": [0, 0, 0], "kernel": 7}, "to nothing"),
    ({"init_std": 0.0}, "init_std"),
    ({"decoder_upsample": "shuffle", "decoder_start": 3, "decoder_sizes": [8, 16]}, "double"),
    ({"decoder_upsample": "nearest"}, "bilinear or shuffle"),
    ({"no_such_field": 1}, "no field"),
])
def test_bad_config_raises_user_error(overrides, match):
    with pytest.raises(UserError, match=match):
        get_preset("tiny", **overrides)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(UserError, match="seed, small, small-map, tiny"):
        get_preset("huge")


def test_old_checkpoints_config_rebuilds_the_old_shapes():
    """A meta.json written before the encoder strides, padding and norms existed builds the same model."""
    old = {k: v for k, v in dataclasses.asdict(get_preset("small")).items()
           if k not in ("encoder_strides", "encoder_padding", "decoder_linear_norm", "head_norm", "init_std",
                        "decoder_upsample", "pad_head")}
    assert VAEConfig(**old).encoder_layers() == [(16, 2, 1), (32, 2, 1), (32, 2, 1), (64, 2, 1)]
    assert VAEConfig(**old).decoder_upsample == "bilinear"
    assert count_parameters(VAE(VAEConfig(**old))) == 243_751  # the small preset before its shuffle decoder


def test_get_preset_copies():
    cfg = get_preset("tiny", z_dim=3)
    cfg.encoder_channels.append(99)
    assert PRESETS["tiny"].z_dim == 16 and 99 not in PRESETS["tiny"].encoder_channels
    assert VAEConfig(**dataclasses.asdict(get_preset("small"))) == PRESETS["small"]


@pytest.mark.parametrize("name", ["tiny", "seed"])
def test_padded_head_gives_the_unpadded_log_probs_and_never_the_pad_channel(name):
    torch.manual_seed(0)
    plain = VAE(get_preset(name)).eval()
    padded = VAE(get_preset(name, pad_head=True)).eval()
    head = [m for m in padded.decoder if isinstance(m, torch.nn.Conv2d)][-1]
    assert head.out_channels == NUM_CHARS + 1
    weights = plain.state_dict()
    own = padded.state_dict()
    for key, value in own.items():
        if value.shape != weights[key].shape:  # the head: the 95 rows of the plain head, a loud 96th row
            loud = torch.full_like(value[NUM_CHARS:], 1e4 if value.dim() == 1 else 0.0)
            weights[key] = torch.cat([weights[key], loud])
    padded.load_state_dict(weights)
    codes = codes_for(plain.cfg, 2)
    expected, _, _ = plain(codes)
    got, _, _ = padded(codes)
    assert got.shape == expected.shape == (2, NUM_CHARS, plain.cfg.grid, plain.cfg.grid)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert int(got.argmax(1).max()) < NUM_CHARS
    padded.train()
    logp, _, _ = padded(codes)
    (-logp.mean()).backward()
    assert head.weight.grad[NUM_CHARS:].abs().max() == 0 and head.bias.grad[NUM_CHARS] == 0


def test_padded_head_takes_the_output_prior_and_rebuilds_from_its_config():
    counts = torch.arange(NUM_CHARS, dtype=torch.float64)
    padded = VAE(get_preset("tiny", pad_head=True))
    padded.init_output_prior(counts)
    plain = VAE(get_preset("tiny"))
    plain.init_output_prior(counts)
    heads = [[m for m in v.decoder if isinstance(m, torch.nn.Conv2d)][-1] for v in (padded, plain)]
    assert torch.equal(heads[0].bias[:NUM_CHARS], heads[1].bias)
    again = VAE(VAEConfig(**dataclasses.asdict(padded.cfg)))
    again.load_state_dict(padded.state_dict())
    assert again.cfg.pad_head


def test_latent_map_model_is_one_flat_latent():
    """A two-level model encodes to [z, map] and decodes that flat vector; its prior draws the map from p(map | z)."""
    cfg = get_preset("tiny", map_channels=4, map_size=8)
    model = VAE(cfg).eval()
    codes = torch.randint(0, 95, (3, 16, 16))
    mu, logvar = model.encode(codes)
    assert cfg.latent_dim() == 16 + 4 * 8 * 8 == mu.shape[1] == logvar.shape[1]
    logp, _, _ = model(codes)
    assert torch.allclose(logp, torch.log_softmax(model.decode(mu).float(), dim=1), atol=1e-5)
    noise = torch.randn(2, cfg.latent_dim())
    latent = model.prior_latent(noise)
    assert torch.equal(latent[:, :16], noise[:, :16])
    assert not torch.equal(latent[:, 16:], noise[:, 16:])  # placed and scaled by p(map | z)
    assert model.decode(latent).shape == (2, 95, 16, 16)


def test_latent_map_kl_is_the_kl_to_the_conditional_prior():
    """forward's whitened map statistics give, through the standard-normal KL, KL(q(map | x) || p(map | z))."""
    from asciiray.losses import kl_loss

    torch.manual_seed(0)
    cfg = get_preset("tiny", map_channels=2, map_size=8)
    model = VAE(cfg).train()
    codes = torch.randint(0, 95, (4, 16, 16))
    torch.manual_seed(1)
    _, mu_w, logvar_w = model(codes)
    torch.manual_seed(1)
    mu, logvar = model.encode(codes)
    z = model.reparameterize(mu, logvar)[:, :cfg.z_dim]
    _, prior_mu, prior_logvar = model._top(z)
    q = torch.distributions.Normal(mu[:, cfg.z_dim:], torch.exp(0.5 * logvar[:, cfg.z_dim:]))
    p = torch.distributions.Normal(prior_mu, torch.exp(0.5 * prior_logvar))
    expected = torch.distributions.kl_divergence(q, p).sum(1).mean()
    assert torch.allclose(kl_loss(mu_w[:, cfg.z_dim:], logvar_w[:, cfg.z_dim:]), expected, rtol=1e-4)


@pytest.mark.parametrize("overrides, match", [
    ({"map_channels": 4, "map_size": 5}, "map_size"),
    ({"map_channels": -1}, "map_channels"),
])
def test_bad_latent_map_config(overrides, match):
    with pytest.raises(UserError, match=match):
        get_preset("tiny", **overrides)
