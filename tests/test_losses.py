"""Loss terms, character weights, image distances, Gumbel schedule and sampling, random roll."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asciiray.charset import NUM_CHARS, SPACE
from asciiray.errors import UserError
from asciiray.losses import (IMAGE_LOSSES, ce_loss, char_weights, compute_losses, gumbel_sample, gumbel_tau,
                             image_distance, image_loss, kl_loss, random_roll, ssim, where_loss)
from asciiray.models import VAE, NeuralRenderer, get_preset, get_renderer_preset, make_renderer, one_hot
from asciiray.render import straight_through_one_hot


def perfect_logp(codes: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(100.0 * one_hot(codes), dim=1)


def random_codes(batch: int = 4, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, NUM_CHARS, (batch, size, size), generator=torch.Generator().manual_seed(seed))


def test_char_weights_follow_the_formula():
    counts = torch.arange(NUM_CHARS, dtype=torch.float32) * 10
    assert torch.equal(char_weights(counts, 0.0, 1.0), torch.ones(NUM_CHARS))
    expected = (1.0 / (counts.double() + 1.0)) ** 0.7
    expected = expected / expected.max()
    expected[SPACE] /= 4.0
    assert torch.allclose(char_weights(counts, 0.7, 4.0).double(), expected)
    # s = 1 is true inverse frequency (of count + 1): a character 10x as common weighs a tenth.
    weights = char_weights(torch.tensor([999.0, 9999.0, 99.0] + [0.0] * (NUM_CHARS - 3)), 1.0, 1.0)
    assert weights[1] / weights[0] == pytest.approx(0.1) and weights[2] / weights[0] == pytest.approx(10.0)
    assert weights[3] == 1.0, "an unseen character gets the largest weight, finite"
    assert torch.isfinite(char_weights(torch.zeros(NUM_CHARS), 2.0, 1.0)).all()
    with pytest.raises(ValueError):
        char_weights(torch.ones(10), 1.0, 1.0)
    with pytest.raises(UserError, match="space_deemph"):
        char_weights(counts, 1.0, 0.0)


def test_a_balanced_space_weight_gives_space_and_ink_the_same_total_weight():
    counts = torch.arange(NUM_CHARS, dtype=torch.float64) + 5.0
    grid = counts.clone()
    grid[SPACE] += 10_000.0  # the grids' padding: a sparse corpus
    for scaling in (0.0, 0.7):
        weight = char_weights(counts, scaling, "balanced", grid).double()
        ink = torch.arange(NUM_CHARS) != SPACE
        assert float(weight[SPACE] * grid[SPACE]) == pytest.approx(float(weight[ink] @ grid[ink]), rel=1e-6)
        assert torch.equal(weight[ink], char_weights(counts, scaling, 1.0)[ink].double())
    with pytest.raises(ValueError, match="grids"):
        char_weights(counts, 0.0, "balanced")
    with pytest.raises(UserError, match="balanced"):
        char_weights(counts, 0.0, "sparse")


def test_ce_is_zero_for_a_perfect_reconstruction():
    codes = random_codes()
    assert ce_loss(perfect_logp(codes), codes).item() == pytest.approx(0.0, abs=1e-6)
    weight = char_weights(torch.rand(NUM_CHARS), 1.0, 3.0)
    assert ce_loss(perfect_logp(codes), codes, weight).item() == pytest.approx(0.0, abs=1e-6)


def test_ce_matches_cross_entropy_of_logits():
    torch.manual_seed(0)
    codes = random_codes()
    logits = torch.randn(4, NUM_CHARS, 8, 8)
    logp = torch.log_softmax(logits, 1)
    weight = char_weights(torch.rand(NUM_CHARS), 1.0, 3.0)
    for w in (None, weight):
        for smoothing in (0.0, 0.1):
            expected = F.cross_entropy(logits, codes, weight=w, label_smoothing=smoothing)
            assert torch.allclose(ce_loss(logp, codes.to(torch.uint8), w, smoothing), expected, atol=1e-5)
    uniform = torch.full((4, NUM_CHARS, 8, 8), -math.log(NUM_CHARS))
    assert ce_loss(uniform, codes).item() == pytest.approx(math.log(NUM_CHARS), rel=1e-5)


def reference_ce(logp: torch.Tensor, codes: torch.Tensor, weight: torch.Tensor | None,
                 smoothing: float) -> torch.Tensor:
    """The plain cross entropy ce_loss must equal: F.nll_loss / F.cross_entropy on one row per cell."""
    rows, targets = logp.permute(0, 2, 3, 1).reshape(-1, NUM_CHARS), codes.long().reshape(-1)
    if smoothing:
        return F.cross_entropy(rows, targets, weight=weight, label_smoothing=smoothing)
    return F.nll_loss(rows, targets, weight=weight)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["contiguous", "channels_last"])
def test_ce_equals_nll_loss_and_cross_entropy(layout, weighted, smoothing):
    """Value and gradient (to the logits) match the reference to 1e-6, in both memory layouts."""
    torch.manual_seed(0)
    codes = random_codes(8, 16)
    logits = (3 * torch.randn(8, NUM_CHARS, 16, 16)).contiguous(memory_format=layout)
    weight = char_weights(torch.rand(NUM_CHARS), 2.0, 5.0) if weighted else None
    values, grads = [], []
    for ce in (ce_loss, reference_ce):
        x = logits.clone().requires_grad_()
        loss = ce(torch.log_softmax(x, 1), codes, weight, smoothing)
        loss.backward()
        values.append(loss)
        grads.append(x.grad)
    torch.testing.assert_close(values[0], values[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-6)
    assert grads[0].abs().max() > 1e-5, "the gradient is not trivially zero"


def test_ce_is_fp32_for_bf16_input():
    codes = random_codes()
    assert ce_loss(perfect_logp(codes).bfloat16(), codes).dtype == torch.float32


def test_kl_closed_form():
    zero = torch.zeros(3, 5)
    assert kl_loss(zero, zero).item() == 0.0
    mu = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [-1.0, 1.0]])
    per_piece = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(1)
    assert kl_loss(mu, logvar).item() == pytest.approx(per_piece.mean().item())
    # KL(N(1, 1) || N(0, 1)) = 1/2 per dimension.
    assert kl_loss(torch.ones(2, 4), torch.zeros(2, 4)).item() == pytest.approx(2.0)


def test_gumbel_tau_schedule():
    assert gumbel_tau(0, 0.1) == 1.0
    assert gumbel_tau(3, 0.1) == pytest.approx(math.exp(-0.3))
    assert gumbel_tau(100, 0.1) == 0.5
    assert gumbel_tau(5, 0.0) == 1.0


def test_gumbel_sample_is_the_argmax_of_its_soft_part_and_one_hot_with_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, NUM_CHARS, 4, 4, requires_grad=True)
    hard, soft = gumbel_sample(torch.log_softmax(logits, 1), 0.7, generator=torch.Generator().manual_seed(3))
    assert hard.shape == (2, 4, 4) and soft.shape == (2, 4, 4, NUM_CHARS)
    assert torch.allclose(soft.detach().sum(-1), torch.ones(2, 4, 4))
    assert torch.equal(hard, soft.detach().argmax(-1))
    sample = straight_through_one_hot(hard, soft)
    assert torch.equal(sample.detach(), F.one_hot(hard, NUM_CHARS).float())
    (sample * torch.randn_like(sample)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_gumbel_samples_follow_the_distribution():
    probs = torch.tensor([0.7, 0.2, 0.1] + [0.0] * (NUM_CHARS - 3))
    logp = probs.clamp(min=1e-12).log().view(1, NUM_CHARS, 1, 1).expand(4000, -1, -1, -1)
    hard, _ = gumbel_sample(logp, 1.0, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(hard.flatten(), minlength=NUM_CHARS)[:3] / hard.numel()
    assert torch.allclose(freq, probs[:3], atol=0.03)


@pytest.mark.parametrize("kind", IMAGE_LOSSES)
def test_image_loss(kind):
    codes = random_codes(2, 6)
    renderer = make_renderer("continuous", 4)
    assert image_loss(renderer, codes, perfect_logp(codes), 0.5, kind=kind).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.zeros(2, NUM_CHARS, 6, 6, requires_grad=True)
    loss = image_loss(renderer, codes, torch.log_softmax(logits, 1), 1.0, kind=kind)
    assert loss.item() > 0
    loss.backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="differentiable"):
        image_loss(make_renderer("discrete", 4), codes, perfect_logp(codes), 1.0, kind=kind)


@pytest.mark.parametrize("kind", IMAGE_LOSSES)
def test_image_distance_is_zero_on_identical_renders_and_positive_otherwise(kind):
    renderer = make_renderer("continuous", 4)
    codes = random_codes(3, 8, seed=1)
    a, b = renderer.from_codes(codes), renderer.from_codes(random_codes(3, 8, seed=2))
    assert image_distance(a, a.clone(), kind).item() == 0.0
    assert image_distance(a, b, kind).item() > 0.01
    assert image_distance(torch.zeros_like(a), a, kind).item() > 0.01
    one_cell = codes.clone()
    one_cell[0, 3, 3] = (codes[0, 3, 3] + 40) % NUM_CHARS  # one character of 192 changed
    near = renderer.from_codes(one_cell)
    assert 0 < image_distance(near, a, kind).item() < image_distance(b, a, kind).item() / 10
    with pytest.raises(ValueError, match="mse, l1, ssim"):
        image_distance(a, b, "psnr")


def test_ssim_matches_a_pixel_by_pixel_computation():
    from asciiray import losses

    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(1, 9, 12, generator=gen), torch.rand(1, 9, 12, generator=gen)
    half = losses.SSIM_WINDOW // 2
    g = np.exp(-np.arange(-half, half + 1) ** 2 / (2 * losses.SSIM_SIGMA ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    px, py = (np.pad(t[0].double().numpy(), half) for t in (x, y))  # zero padding: blank paper around
    values = []
    for i in range(9):
        for j in range(12):
            a, b = px[i:i + 2 * half + 1, j:j + 2 * half + 1], py[i:i + 2 * half + 1, j:j + 2 * half + 1]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb, cov = (w * a * a).sum() - ma ** 2, (w * b * b).sum() - mb ** 2, (w * a * b).sum() - ma * mb
            values.append((2 * ma * mb + losses.SSIM_C1) * (2 * cov + losses.SSIM_C2)
                          / ((ma ** 2 + mb ** 2 + losses.SSIM_C1) * (va + vb + losses.SSIM_C2)))
    assert ssim(x, y).item() == pytest.approx(float(np.mean(values)), rel=1e-4)
    assert ssim(x, x).item() == pytest.approx(1.0)


class _ReferenceStraightThrough(torch.autograd.Function):
    """The plain straight-through one-hot (argmax forward, identity backward) the fast one must equal."""

    @staticmethod
    def forward(ctx, soft):
        return torch.zeros_like(soft).scatter_(-1, soft.argmax(dim=-1, keepdim=True), 1.0)

    @staticmethod
    def backward(ctx, grad):
        return grad


def reference_image_loss(renderer, codes, logp, tau, generator):
    """The plain image_loss the fast one must equal: the renderer's forward of a float32 one-hot of the Gumbel sample."""
    cells = logp.float().movedim(1, -1)
    noise = torch.empty_like(cells).uniform_(generator=generator).log_().neg_().log_().neg_()
    soft = F.softmax(noise.add_(cells).div_(tau), dim=-1)
    sample = _ReferenceStraightThrough.apply(soft).movedim(-1, 1)
    with torch.no_grad():
        target = renderer(one_hot(codes))
    return renderer(sample).float(), F.mse_loss(renderer(sample).float(), target.float())


@pytest.mark.parametrize("kind", ["continuous", "neural"])
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_image_loss_equals_the_unfused_reference(kind, tau):
    """Same noise, same sample image, same loss, same gradient to the logits as the unfused path (1e-6)."""
    torch.manual_seed(0)
    renderer = (make_renderer("continuous", 4) if kind == "continuous"
                else NeuralRenderer(get_renderer_preset("tiny")).requires_grad_(False))
    r = renderer.font_res
    codes = random_codes(3, 12)
    logits = torch.randn(3, NUM_CHARS, 12, 12).contiguous(memory_format=torch.channels_last)
    results = []
    for fused in (True, False):
        x = logits.clone().requires_grad_()
        logp = torch.log_softmax(x, 1)
        generator = torch.Generator().manual_seed(7)
        if fused:
            image = renderer.straight_through(*gumbel_sample(logp, tau, torch.Generator().manual_seed(7)))
            loss = image_loss(renderer, codes, logp, tau, generator)
        else:
            image, loss = reference_image_loss(renderer, codes, logp, tau, generator)
        loss.backward()
        results.append((image.detach(), loss.detach(), x.grad))
    (image, loss, grad), (ref_image, ref_loss, ref_grad) = results
    assert image.shape == (3, 12 * r, 12 * r)
    torch.testing.assert_close(image, ref_image, rtol=0, atol=1e-6)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-6)
    scale = ref_grad.abs().max()
    assert scale > 0, "the gradient is not trivially zero"
    torch.testing.assert_close(grad / scale, ref_grad / scale, rtol=0, atol=1e-6)


def test_compute_losses_combines_the_terms():
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    model = VAE(cfg)
    codes = random_codes(3, cfg.grid)
    out = model(codes)
    renderer = make_renderer("continuous", 2)
    terms = compute_losses(out, codes, renderer=renderer, tau=0.8, kl_coeff=0.1, ce_recon_loss_scale=2.0,
                           image_recon_loss_coeff=0.5)
    assert set(terms) == {"loss", "kl", "ce", "image"}
    assert all(t.dtype == torch.float32 and t.dim() == 0 for t in terms.values())
    expected = 0.1 * terms["kl"] + 2.0 * terms["ce"] + 0.5 * terms["image"]
    assert torch.allclose(terms["loss"], expected)
    assert terms["image"] > 0
    terms["loss"].backward()
    off = compute_losses(model(codes), codes, renderer=None, kl_coeff=0.1, image_recon_loss_coeff=0.0)
    assert off["image"].item() == 0.0


def test_where_loss_scores_the_argmax_ink_decision():
    # One ink cell whose ink mass (0.6) is split over three characters, so the space (0.4) wins the argmax,
    # and one space cell: the term is the BCE of (best ink log-prob - space log-prob) against the ink mask.
    probs = torch.full((1, NUM_CHARS, 1, 2), 1e-9)
    probs[0, SPACE, 0, 0], probs[0, 1:4, 0, 0] = 0.4, 0.2
    probs[0, SPACE, 0, 1], probs[0, 5, 0, 1] = 0.9, 0.1
    logp = probs.log().requires_grad_()
    codes = torch.tensor([[[2, SPACE]]])
    loss = where_loss(logp, codes)
    margins = torch.tensor([math.log(0.2 / 0.4), math.log(0.1 / 0.9)])
    expected = (-F.logsigmoid(margins[0]) - F.logsigmoid(-margins[1])) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    # It raises the best ink character of the ink cell against the space, and lowers it in the space cell.
    assert logp.grad[0, 1, 0, 0] < 0 < logp.grad[0, SPACE, 0, 0]
    assert logp.grad[0, 5, 0, 1] > 0 > logp.grad[0, SPACE, 0, 1]
    assert where_loss(perfect_logp(random_codes()), random_codes()).item() < 1e-6


def test_random_roll_keeps_each_piece_and_is_vectorised():
    codes = random_codes(16, 10).to(torch.uint8)
    rolled = random_roll(codes, 3.0, generator=torch.Generator().manual_seed(0))
    assert rolled.shape == codes.shape and rolled.dtype == codes.dtype
    assert not torch.equal(rolled, codes)
    for before, after in zip(codes, rolled):
        assert torch.equal(before.flatten().sort().values, after.flatten().sort().values)
        # Each piece is a cyclic roll of the original.
        assert any(torch.equal(torch.roll(before, (dy, dx), (0, 1)), after)
                   for dy in range(10) for dx in range(10))
    assert random_roll(codes, 0.0) is codes


def test_random_roll_matches_torch_roll():
    codes = random_codes(1, 6)
    gen = torch.Generator().manual_seed(5)
    shifts = torch.round(torch.randn(1, 2, generator=torch.Generator().manual_seed(5)) * 2.0).long()
    rolled = random_roll(codes, 2.0, generator=gen)
    assert torch.equal(rolled[0], torch.roll(codes[0], tuple(shifts[0].tolist()), (0, 1)))


def test_two_level_kl_is_reported_in_parts_and_weighted_apart():
    from asciiray.losses import compute_losses, kl_loss

    torch.manual_seed(0)
    logp = torch.log_softmax(torch.randn(2, 95, 4, 4), dim=1)
    codes = torch.randint(0, 95, (2, 4, 4))
    mu, logvar = torch.randn(2, 10), torch.randn(2, 10) * 0.1
    terms = compute_losses((logp, mu, logvar), codes, kl_coeff=0.5, global_dims=3, kl_map_coeff=0.25)
    assert torch.allclose(terms["kl_z"], kl_loss(mu[:, :3], logvar[:, :3]))
    assert torch.allclose(terms["kl_map"], kl_loss(mu[:, 3:], logvar[:, 3:]))
    assert torch.allclose(terms["kl"], kl_loss(mu, logvar))
    assert torch.allclose(terms["loss"], 0.5 * terms["kl_z"] + 0.25 * terms["kl_map"] + terms["ce"])
    plain = compute_losses((logp, mu, logvar), codes, kl_coeff=0.5, global_dims=10)
    assert "kl_map" not in plain and torch.allclose(plain["loss"], 0.5 * plain["kl"] + plain["ce"])
