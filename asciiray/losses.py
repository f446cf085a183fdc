"""The VAE's loss terms, its reconstruction metrics and its on-device augmentation.

Everything here runs in fp32, whatever autocast dtype the model ran in:

    loss = kl_coeff * kl + ce_recon_loss_scale * ce + image_recon_loss_coeff * image

- ce: cross entropy of the decoder's log-probabilities against the input codes;
- image: MSE between the rendered input and the rendered straight-through
  Gumbel-softmax sample of the decoder;
- kl: KL(q(z|x) || N(0, I)), summed over z, mean over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from asciiray.charset import NUM_CHARS, SPACE
from asciiray.errors import UserError
from asciiray.render import Renderer

TAU_MIN = 0.5


def char_weights(freq: torch.Tensor, scaling: float, space_deemph: float) -> torch.Tensor:
    """Class weights [95] that favour rare characters: (1 / (f + 1)) ** scaling, space / space_deemph.

    `freq` holds per-character counts or frequencies of any scale; it is
    normalised here to relative frequencies f (summing to 1), so the weights
    do not depend on the corpus size. scaling = 0, space_deemph = 1 gives ones.
    """
    if not space_deemph > 0:
        raise UserError(f"space_deemph = {space_deemph} must be positive: 1 leaves the space weight alone")
    freq = torch.as_tensor(freq, dtype=torch.float32).flatten()
    if freq.numel() != NUM_CHARS or bool((freq < 0).any()):
        raise ValueError(f"expected {NUM_CHARS} non-negative character frequencies, got shape {list(freq.shape)}")
    total = freq.sum()
    rel = freq / total if total > 0 else freq
    weight = (1.0 / (rel + 1.0)) ** scaling
    weight[SPACE] = weight[SPACE] / space_deemph
    return weight


def ce_loss(logp: torch.Tensor, codes: torch.Tensor, weight: torch.Tensor | None = None,
            label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross entropy of log-probabilities [B, 95, S, S] against codes [B, S, S], mean over cells.

    F.cross_entropy's semantics: with `weight`, the mean is weighted by each cell's
    target weight, and label smoothing e gives (1 - e) * NLL + e / 95 * (minus the
    weighted sum of all 95 log-probabilities), both over the summed target weights.
    Written as per-cell terms (reduction "none") summed, then divided: F.nll_loss's
    own weighted mean runs in a single CUDA thread block, slow over a million cells.
    """
    with torch.autocast(device_type=logp.device.type, enabled=False):
        logp, targets = logp.float(), codes.long()
        weight = weight.to(logp.device, torch.float32) if weight is not None else None
        cells = logp.movedim(1, -1)
        if cells.is_contiguous():  # channels-last, as the VAE makes it: one row per cell, no copy
            per_cell = F.nll_loss(cells.reshape(-1, logp.shape[1]), targets.reshape(-1), weight=weight,
                                  reduction="none")
        else:
            per_cell = F.nll_loss(logp, targets, weight=weight, reduction="none")
        loss = per_cell.sum()
        total = targets.numel() if weight is None else weight[targets].sum()
        if label_smoothing:
            everything = cells.sum() if weight is None else cells.sum(dim=(0, 1, 2)) @ weight
            loss = (1.0 - label_smoothing) * loss - label_smoothing / logp.shape[1] * everything
        return loss / total


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the latent, mean over the batch."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def gumbel_tau(epoch: int, rate: float) -> float:
    """Gumbel-softmax temperature of an epoch: max(0.5, exp(-rate * epoch))."""
    return max(TAU_MIN, math.exp(-rate * epoch))


def gumbel_sample(logp: torch.Tensor, tau: float,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A Gumbel-softmax sample of each cell of log-probabilities [B, 95, S, S]: (hard, soft).

    soft = softmax((logp + g) / tau) over the characters, [B, S, S, 95] (characters last,
    contiguous for the VAE's channels-last output), is what gradients flow through;
    hard = its argmax [B, S, S], the sampled codes (the argmax of logp + g: tau does not
    change it).
    """
    cells = logp.float().movedim(1, -1)
    # Gumbel(0, 1) noise -log(-log(U)), then (x + noise) / tau, in place: this tensor is the largest
    # one here, and on a CPU every allocation and pass over it shows in the step time.
    noise = torch.empty_like(cells).uniform_(generator=generator).log_().neg_().log_().neg_()
    soft = F.softmax(noise.add_(cells).div_(tau), dim=-1)
    return soft.argmax(dim=-1), soft


def image_loss(renderer: Renderer, codes: torch.Tensor, logp: torch.Tensor, tau: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between the rendered input and the rendered straight-through Gumbel sample of the decoder.

    Both images are of code grids: for the continuous renderer two gathers from the glyph atlas,
    with no 95-channel one-hot (Renderer.straight_through).
    """
    if not renderer.differentiable:
        raise ValueError(f"the image loss needs a differentiable renderer, got {type(renderer).__name__}")
    with torch.no_grad():
        target = renderer.from_codes(codes)
    return F.mse_loss(renderer.straight_through(*gumbel_sample(logp, tau, generator)).float(), target.float())


def compute_losses(model_out: tuple[torch.Tensor, torch.Tensor, torch.Tensor], codes: torch.Tensor, *,
                   weight: torch.Tensor | None = None, label_smoothing: float = 0.0,
                   renderer: Renderer | None = None, tau: float = 1.0, kl_coeff: float = 1.0,
                   ce_recon_loss_scale: float = 1.0, image_recon_loss_coeff: float = 0.0) -> dict[str, torch.Tensor]:
    """The weighted total and its terms: keys loss, kl, ce, image (image is 0 when its coefficient is)."""
    logp, mu, logvar = model_out
    kl = kl_loss(mu, logvar)
    ce = ce_loss(logp, codes, weight, label_smoothing)
    if image_recon_loss_coeff:
        if renderer is None:
            raise ValueError("image_recon_loss_coeff is non-zero but no renderer was given")
        image = image_loss(renderer, codes, logp, tau)
    else:
        image = torch.zeros((), device=logp.device)
    loss = kl_coeff * kl + ce_recon_loss_scale * ce + image_recon_loss_coeff * image
    return {"loss": loss, "kl": kl, "ce": ce, "image": image}


def reconstruction_sums(logp: torch.Tensor, codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """char_acc, nonspace_acc and space_collapse as float64 [numerator, denominator] pairs.

    Pairs add up exactly across batches and workers (sum them, then divide);
    they stay on the device, so accumulating them never waits for the GPU.
    - char_acc: cells whose argmax equals the input / all cells;
    - nonspace_acc: the same over the cells where the input is not a space;
    - space_collapse: pieces reconstructed as all spaces while the input is not / all pieces.
    """
    pred = logp.argmax(dim=1)
    codes = codes.long()
    right = pred == codes
    inked = codes != SPACE
    collapsed = (pred == SPACE).flatten(1).all(dim=1) & inked.flatten(1).any(dim=1)
    return {
        "char_acc": metric_pair(right.sum(), right.numel()),
        "nonspace_acc": metric_pair((right & inked).sum(), inked.sum()),
        "space_collapse": metric_pair(collapsed.sum(), len(codes)),
    }


def metric_pair(total: torch.Tensor, count: torch.Tensor | int) -> torch.Tensor:
    """A metric's [sum, count] as float64 on the device of `total`.

    A Python `count` is filled in on the device, not copied there from the host:
    a host-to-device copy of a Python number makes the step wait for the GPU.
    """
    count = count.double() if isinstance(count, torch.Tensor) else total.new_full((), count, dtype=torch.float64)
    return torch.stack([total.double(), count])


def reconstruction_metrics(logp: torch.Tensor, codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """char_acc, nonspace_acc, space_collapse of one batch, as ratios (0 where nothing was counted)."""
    return {k: v[0] / v[1].clamp(min=1) for k, v in reconstruction_sums(logp, codes).items()}


def random_roll(codes: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Roll each grid [B, S, S] cyclically by its own rounded N(0, std^2) row and column offsets.

    Runs on the codes' device (a `generator` must live there too); std = 0 returns `codes` itself.
    """
    if std == 0:
        return codes
    b, h, w = codes.shape
    shifts = torch.round(torch.randn(b, 2, device=codes.device, generator=generator) * std).long()
    rows = (torch.arange(h, device=codes.device) - shifts[:, :1]) % h  # [B, H]
    cols = (torch.arange(w, device=codes.device) - shifts[:, 1:]) % w  # [B, W]
    batch = torch.arange(b, device=codes.device)[:, None, None]
    return codes[batch, rows[:, :, None], cols[:, None, :]]
