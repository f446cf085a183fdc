"""Reconstruction quality of the VAE, as figures that neither blank nor over-inked output can game.

A cell is *inked* when it holds a character other than space. With TP the
cells predicted inked that equal the input (necessarily inked there too):

- char_acc: cells whose argmax equals the input / all cells (mostly spaces, so easy);
- ink_recall = nonspace_acc: TP / cells inked in the input (rewards inking everything);
- ink_precision: TP / cells predicted inked (rewards inking nothing);
- ink_f1: 2 TP / (predicted inked + input inked), their harmonic mean: the headline figure;
- ink_ratio: cells predicted inked / cells inked in the input (1 is the right amount of ink);
- near_collapse: pieces whose predicted ink is under NEAR_COLLAPSE of the input's / all pieces;
- space_collapse: inked pieces reconstructed as all spaces / all pieces (the prototype's failure).

Every metric is a float64 [numerator, denominator] pair on the logits' device:
pairs add up exactly across batches and workers (sum, then divide), and
computing them never waits for the device (no host-to-device copies, no .item()).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from asciiray.charset import SPACE

# A piece counts as nearly collapsed when its reconstruction holds less than this share of its ink.
NEAR_COLLAPSE = 0.1
# Which way each metric of `reconstruction_sums` improves (a search's mode); ink_ratio's best value is 1,
# neither a minimum nor a maximum, so nothing optimises it.
BETTER: dict[str, str | None] = {
    "char_acc": "max", "nonspace_acc": "max", "ink_recall": "max", "ink_precision": "max", "ink_f1": "max",
    "ink_ratio": None, "near_collapse": "min", "space_collapse": "min",
}


def reconstruction_sums(logp: torch.Tensor, codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every metric of the module docstring for a batch of scores [B, 95, S, S] and input codes [B, S, S]."""
    return prediction_sums(logp.argmax(dim=1), codes)


def prediction_sums(pred: torch.Tensor, codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """reconstruction_sums of the predicted codes [B, S, S] (the scores' argmax) and input codes [B, S, S]."""
    codes = codes.long()
    right = pred == codes
    inked = codes != SPACE
    pred_inked = pred != SPACE
    hits = (right & inked).flatten(1).sum(1).double()  # TP per piece
    ink = inked.flatten(1).sum(1).double()
    pred_ink = pred_inked.flatten(1).sum(1).double()
    collapsed = (pred_ink == 0) & (ink > 0)
    near = pred_ink < NEAR_COLLAPSE * ink
    tp, ink_sum, pred_sum = hits.sum(), ink.sum(), pred_ink.sum()
    recall = metric_pair(tp, ink_sum)
    return {
        "char_acc": metric_pair(right.sum(), right.numel()),
        "nonspace_acc": recall,
        "ink_recall": recall,
        "ink_precision": metric_pair(tp, pred_sum),
        "ink_f1": metric_pair(2 * tp, pred_sum + ink_sum),
        "ink_ratio": metric_pair(pred_sum, ink_sum),
        "near_collapse": metric_pair(near.sum(), len(codes)),
        "space_collapse": metric_pair(collapsed.sum(), len(codes)),
    }


def metric_pair(total: torch.Tensor, count: torch.Tensor | int) -> torch.Tensor:
    """A metric's [sum, count] as float64 on the device of `total`.

    A Python `count` is filled in on the device, not copied there from the host:
    a host-to-device copy of a Python number makes the step wait for the GPU.
    """
    count = count.double() if isinstance(count, torch.Tensor) else total.new_full((), count, dtype=torch.float64)
    return torch.stack([total.double(), count])


def ratios(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """Pairs to plain ratios; a metric with nothing counted (denominator 0) is NaN."""
    return {k: float(v[0] / v[1]) if v[1] > 0 else float("nan") for k, v in sums.items()}


class Sums:
    """Metric pairs summed over batches (name -> float64 [sum, count]); training sums them over workers too."""

    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor] = {}

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        """Add a batch's pairs, detached so that the sums hold no autograd graph."""
        for name, pair in stats.items():
            pair = pair.detach().double()
            self.values[name] = self.values[name] + pair if name in self.values else pair


@torch.no_grad()
def score(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, float]:
    """Every metric of a VAE in eval mode (z = mu) over batches of code grids [B, S, S] on its device."""
    model.eval()
    sums = Sums()
    for codes in batches:
        logp, _, _ = model(codes)
        sums.add(reconstruction_sums(logp, codes))
    return ratios(sums.values)
