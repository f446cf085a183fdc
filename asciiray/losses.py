"""The VAE's loss terms and its on-device augmentation (its metrics are in asciiray.metrics).

Everything here runs in fp32, whatever autocast dtype the model ran in:

    loss = kl_coeff * kl + ce_recon_loss_scale * ce + image_recon_loss_coeff * image

- ce: cross entropy of the decoder's log-probabilities against the input codes;
- image: MSE, L1 or 1 - SSIM between the rendered input and the rendered
  straight-through Gumbel-softmax sample of the decoder;
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


def char_weights(counts: torch.Tensor, scaling: float, space_deemph: float | str,
                 grid_counts: torch.Tensor | None = None) -> torch.Tensor:
    """Class weights [95] that favour rare characters: (1 / (count + 1)) ** scaling, space / space_deemph.

    `counts` are the raw per-character counts of the training pieces, so
    scaling = 1 gives true inverse-frequency weights (the prototype's meaning;
    its notes used 0.7) and scaling = 0 equal ones; the + 1 keeps an unseen
    character finite. The weights are divided by their largest before the
    space de-emphasis: the weighted-mean cross entropy does not depend on their
    scale, and this keeps them readable.

    space_deemph "balanced" sets the de-emphasis from the corpus's ink density
    instead of a constant: the space cells of the training grids (`grid_counts`,
    padding included) then weigh as much in total as their ink cells, so a
    sparse corpus, whose cells are mostly space, does not learn that a blank
    grid is nearly right.
    """
    counts = _counts(counts)
    weight = (1.0 / (counts + 1.0)) ** scaling
    weight = weight / weight.max()
    if space_deemph == "balanced":
        if grid_counts is None:
            raise ValueError("a balanced space weight needs the training grids' character counts")
        cells = _counts(grid_counts)
        ink = torch.ones(NUM_CHARS, dtype=torch.bool)
        ink[SPACE] = False
        ink_mass = float(weight[ink] @ cells[ink])
        space_deemph = float(weight[SPACE] * cells[SPACE]) / ink_mass if ink_mass > 0 else 1.0
    elif not isinstance(space_deemph, (int, float)) or not space_deemph > 0:
        raise UserError(f"space_deemph = {space_deemph} must be positive (1 leaves the space weight alone) "
                        f"or balanced")
    weight[SPACE] = weight[SPACE] / space_deemph
    return weight.float()


def _counts(counts: torch.Tensor) -> torch.Tensor:
    counts = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if counts.numel() != NUM_CHARS or bool((counts < 0).any()):
        raise ValueError(f"expected {NUM_CHARS} non-negative character counts, got shape {list(counts.shape)}")
    return counts


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


def where_loss(logp: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """BCE of the reconstruction's ink-or-space decision against the input's ink mask, mean over cells.

    The argmax inks a cell only when one ink character beats the space. Where the model is sure of
    ink but not of which character (real art draws a stroke with any of `/|\\_.-'`), the ink mass is
    split and the space wins every cell: whole pictures come back blank. This term scores the decision
    itself, the logit (best ink log-probability - space log-probability), so the cross entropy still
    says which character and this one says where.
    """
    with torch.autocast(device_type=logp.device.type, enabled=False):
        logp = logp.float()
        margin = logp[:, SPACE + 1:].amax(dim=1) - logp[:, SPACE]
        return F.binary_cross_entropy_with_logits(margin, (codes != SPACE).float())


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the latent, mean over the batch."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def gumbel_tau(epoch: int, rate: float) -> float:
    """Gumbel-softmax temperature of an epoch: max(0.5, exp(-rate * epoch))."""
    return max(TAU_MIN, math.exp(-rate * epoch))


def gumbel_sample(logp: torch.Tensor, tau: float | torch.Tensor,
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


IMAGE_LOSSES = ("mse", "l1", "ssim")
# SSIM's Gaussian window and stabilising constants (Wang et al. 2004, for images in [0, 1]).
SSIM_WINDOW, SSIM_SIGMA, SSIM_C1, SSIM_C2 = 11, 1.5, 0.01 ** 2, 0.03 ** 2


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean structural similarity of ink images [B, H, W] in [0, 1], with a Gaussian window.

    Local means, variances and covariance are Gaussian-weighted (separable,
    zero padded: outside the image is blank paper), so the map has the
    images' size; 1 for identical images.
    """
    half = SSIM_WINDOW // 2
    x = torch.arange(SSIM_WINDOW, dtype=torch.float32, device=a.device) - half
    g = torch.exp(-x.pow(2) / (2 * SSIM_SIGMA ** 2))
    g = g / g.sum()

    def blur(img: torch.Tensor) -> torch.Tensor:
        img = F.conv2d(img, g.view(1, 1, 1, -1), padding=(0, half))
        return F.conv2d(img, g.view(1, 1, -1, 1), padding=(half, 0))

    a, b = a.float().unsqueeze(1), b.float().unsqueeze(1)
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_a * mu_a + mu_b * mu_b + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return (num / den).mean()


def image_distance(image: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """How far an image is from its target, in fp32: MSE, L1 or 1 - SSIM; 0 exactly when they are equal."""
    image, target = image.float(), target.float()
    if kind == "mse":
        return F.mse_loss(image, target)
    if kind == "l1":
        return F.l1_loss(image, target)
    if kind == "ssim":
        return 1.0 - ssim(image, target)
    raise ValueError(f"image loss {kind!r} is unknown: use one of {', '.join(IMAGE_LOSSES)}")


def image_loss(renderer: Renderer, codes: torch.Tensor, logp: torch.Tensor, tau: float | torch.Tensor,
               generator: torch.Generator | None = None, kind: str = "mse") -> torch.Tensor:
    """`kind` distance between the rendered input and the rendered straight-through Gumbel sample of the decoder.

    Both images are of code grids: for the continuous renderer two gathers from the glyph atlas,
    with no 95-channel one-hot (Renderer.straight_through).
    """
    if not renderer.differentiable:
        raise ValueError(f"the image loss needs a differentiable renderer, got {type(renderer).__name__}")
    with torch.no_grad():
        target = renderer.from_codes(codes)
    image = renderer.straight_through(*gumbel_sample(logp, tau, generator))
    with torch.autocast(device_type=logp.device.type, enabled=False):
        return image_distance(image, target, kind)


def compute_losses(model_out: tuple[torch.Tensor, torch.Tensor, torch.Tensor], codes: torch.Tensor, *,
                   weight: torch.Tensor | None = None, label_smoothing: float = 0.0,
                   renderer: Renderer | None = None, tau: float | torch.Tensor = 1.0, kl_coeff: float = 1.0,
                   ce_recon_loss_scale: float = 1.0, image_recon_loss_coeff: float = 0.0,
                   image_kind: str = "mse", global_dims: int | None = None,
                   kl_map_coeff: float | None = None, ce: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The weighted total and its terms: keys loss, kl, ce, image (image is 0 when its coefficient is).

    With `global_dims` (a two-level latent: the first `global_dims` entries are the global z, the
    rest the latent map, whitened by its prior), kl is their sum and kl_z and kl_map are reported
    too; the map's term is weighted by `kl_map_coeff` (default: kl_coeff). `ce`: the cross entropy
    when the caller computed it already (asciiray.train.head_loss, which never materialises the
    log-probabilities: model_out[0] is not read then unless the image term is on).
    """
    logp, mu, logvar = model_out
    ce = ce_loss(logp, codes, weight, label_smoothing) if ce is None else ce
    if image_recon_loss_coeff:
        if renderer is None:
            raise ValueError("image_recon_loss_coeff is non-zero but no renderer was given")
        image = image_loss(renderer, codes, logp, tau, kind=image_kind)
    else:
        image = torch.zeros((), device=mu.device)
    terms = {"ce": ce, "image": image}
    if global_dims is not None and global_dims < mu.shape[1]:
        terms["kl_z"] = kl_loss(mu[:, :global_dims], logvar[:, :global_dims])
        terms["kl_map"] = kl_loss(mu[:, global_dims:], logvar[:, global_dims:])
        terms["kl"] = terms["kl_z"] + terms["kl_map"]
        map_coeff = kl_coeff if kl_map_coeff is None else kl_map_coeff
        kl_term = kl_coeff * terms["kl_z"] + map_coeff * terms["kl_map"]
    else:
        terms["kl"] = kl_loss(mu, logvar)
        kl_term = kl_coeff * terms["kl"]
    return {"loss": kl_term + ce_recon_loss_scale * ce + image_recon_loss_coeff * image, **terms}


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
