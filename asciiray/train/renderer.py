"""Training the neural font renderer: its inputs and targets, its Task for the shared loop, its driver.

The renderer must draw what a reader would see from what a VAE decoder
outputs, so its inputs are made on the device, batch by batch, from real
corpus grids and from random grids (so it draws every glyph, not only the
corpus's), then perturbed the way a decoder's output looks; each cell gets one of

- one-hot: the character itself;
- label smoothing: (1 - eps) * one-hot + eps / 95, eps ~ U(0, 1);
- a mixture of two characters: w * one-hot + (1 - w) * one-hot(random), w ~ U(0, 1);
- noisy logits: softmax((N(0, 1) + m * one-hot) / T), m ~ U(0, 6), T log-uniform in the temperature range.

The target is the discrete render of the argmax of the perturbed input (or,
with `target: continuous`, its probability-weighted render). Validation
scores held-out corpus grids three ways, with inputs drawn from a fixed seed:
one-hot (`*_onehot`), soft (every cell perturbed, `*_soft`) and random grids
(`*_random`, one-hot), as per-pixel MSE and PSNR; `val/loss`, the mean of the
three MSEs, ranks the checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from asciiray import config
from asciiray.charset import NUM_CHARS, SPACE
from asciiray.metrics import metric_pair
from asciiray.models import NeuralRenderer, RendererConfig, get_renderer_preset, one_hot
from asciiray.render import glyph_atlas, render_codes, render_probs
from asciiray.train.job import Job
from asciiray.train.loop import Task, run
from asciiray.train.options import RendererTrainConfig

log = logging.getLogger(__name__)

MAX_MARGIN = 6.0
# PSNR of an image is capped here, so a perfectly drawn (e.g. blank) image does not count as infinite.
MAX_PSNR = 100.0
EVAL_SETS = ("onehot", "soft", "random")


def renderer_config(cfg: RendererTrainConfig) -> RendererConfig:
    """The RendererConfig a training config asks for: its preset with the sizes given laid over it."""
    return get_renderer_preset(cfg.model.preset, **cfg.model.overrides())


def random_codes(n: int, grid: int, device: torch.device | str,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 grids [n, S, S] of random printable characters at a random ink density per grid.

    Densities are uniform in [0, 1], so the grids range from nearly blank
    paper to solid text; non-space characters are uniform over the other 94.
    """
    density = torch.rand(n, 1, 1, device=device, generator=generator)
    inked = torch.rand(n, grid, grid, device=device, generator=generator) < density
    chars = torch.randint(1, NUM_CHARS, (n, grid, grid), device=device, generator=generator)
    return torch.where(inked, chars, torch.full_like(chars, SPACE)).to(torch.uint8)


def perturb(codes: torch.Tensor, onehot_prop: float, temperature_min: float, temperature_max: float,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """fp32 distributions [B, 95, S, S] around code grids [B, S, S], like a decoder's softmax.

    A share `onehot_prop` of the cells stays one-hot; the rest are split evenly
    between label smoothing, two-character mixtures and noisy logits (see the
    module docstring).
    """
    b, s, _ = codes.shape
    device = codes.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, device=device, generator=generator)

    u = rand(b, 1, s, s)
    share = (1.0 - onehot_prop) / 3.0
    smooth = (u >= onehot_prop) & (u < onehot_prop + share)
    mixed = (u >= onehot_prop + share) & (u < onehot_prop + 2 * share)
    noisy = (u >= onehot_prop + 2 * share)[:, 0]
    eps = rand(b, 1, s, s) * smooth
    w = torch.where(mixed, rand(b, 1, s, s), torch.ones_like(u))
    other = torch.randint(0, NUM_CHARS, (b, s, s), device=device, generator=generator)
    probs = one_hot(codes) * (w - eps) + one_hot(other) * (1.0 - w) + eps / NUM_CHARS

    n = int(noisy.sum())
    if n:
        picked = F.one_hot(codes[noisy].long(), NUM_CHARS).float()
        margin = rand(n, 1) * MAX_MARGIN
        lo, hi = math.log(temperature_min), math.log(temperature_max)
        temperature = torch.exp(lo + (hi - lo) * rand(n, 1))
        logits = torch.randn(n, NUM_CHARS, device=device, generator=generator) + margin * picked
        probs.permute(0, 2, 3, 1)[noisy] = torch.softmax(logits / temperature, dim=1)
    return probs


def target_image(probs: torch.Tensor, atlas: torch.Tensor, target: str) -> torch.Tensor:
    """What the renderer should draw for `probs`: the discrete or the continuous render."""
    if target == "discrete":
        return render_codes(probs.argmax(1), atlas)
    return render_probs(probs, atlas)


def image_errors(image: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (MSE, PSNR in dB) [B] of ink images in [0, 1]; PSNR is capped at MAX_PSNR."""
    mse = (image.float() - target.float()).pow(2).flatten(1).mean(1)
    psnr = (-10.0 * torch.log10(mse.clamp(min=10 ** (-MAX_PSNR / 10)))).clamp(max=MAX_PSNR)
    return mse, psnr


def _pair(values: torch.Tensor) -> torch.Tensor:
    return metric_pair(values.double().sum(), values.numel())


class RendererTask(Task):
    shown_metrics = ("loss", "psnr")

    def __init__(self, job: Job, device: torch.device) -> None:
        super().__init__(job, device)
        self.task = self.cfg.task
        self.model_config = renderer_config(self.cfg)
        self.atlas = glyph_atlas(self.model_config.font_res, self.model_config.font_zoom).to(device)
        self.sample: torch.Tensor | None = None
        self.val_generator: torch.Generator | None = None

    def build_model(self) -> torch.nn.Module:
        return NeuralRenderer(self.model_config)

    def batches(self, split: str, epoch: int) -> Iterator[torch.Tensor]:
        import ray.train

        training = split == "train"
        if not training:
            # The same held-out inputs every epoch (per worker), so the curves compare like with like.
            self.val_generator = torch.Generator(self.device)
            self.val_generator.manual_seed(self.cfg.optim.seed + 1000 * ray.train.get_context().get_world_rank())
        for codes in self.shard_codes(split):
            if not training and self.sample is None:
                self.sample = codes[:1]
            yield codes

    def train_inputs(self, codes: torch.Tensor) -> torch.Tensor:
        """A training batch of distributions: corpus grids (or crops), some swapped for random ones, perturbed."""
        b, s, _ = codes.shape
        crop = self.task.crop
        if crop is not None and crop < s:
            start = torch.randint(0, s - crop + 1, (b, 2), device=codes.device)
            cells = torch.arange(crop, device=codes.device)
            rows, cols = start[:, :1] + cells, start[:, 1:] + cells
            codes = codes[torch.arange(b, device=codes.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
        k = round(b * self.task.random_prop)
        if k:
            codes = torch.cat([random_codes(k, codes.shape[-1], codes.device), codes[k:]])
        return perturb(codes, self.task.onehot_prop, self.task.temperature_min, self.task.temperature_max)

    def eval_inputs(self, codes: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The three held-out views of a batch of corpus grids: one-hot, soft, random (one-hot)."""
        return {
            "onehot": one_hot(codes),
            "soft": perturb(codes, 0.0, self.task.temperature_min, self.task.temperature_max, generator),
            "random": one_hot(random_codes(len(codes), codes.shape[-1], codes.device, generator)),
        }

    def step(self, model: torch.nn.Module, codes: torch.Tensor,
             epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target = self.task.target
        if model.training:
            probs = self.train_inputs(codes)
            mse, psnr = image_errors(model(probs), target_image(probs, self.atlas, target))
            return mse.mean(), {"loss": _pair(mse), "psnr": _pair(psnr)}
        stats: dict[str, torch.Tensor] = {}
        for name, probs in self.eval_inputs(codes, self.val_generator).items():
            mse, psnr = image_errors(model(probs), target_image(probs, self.atlas, target))
            stats[f"mse_{name}"], stats[f"psnr_{name}"] = _pair(mse), _pair(psnr)
        stats["loss"] = sum(stats[f"mse_{n}"] for n in EVAL_SETS) / len(EVAL_SETS)
        stats["psnr"] = sum(stats[f"psnr_{n}"] for n in EVAL_SETS) / len(EVAL_SETS)
        return stats["loss"][0] / stats["loss"][1], stats

    def show(self, model: torch.nn.Module, writer: Any, epoch: int) -> str | None:
        """Log target | one-hot render | soft render of one held-out grid to TensorBoard."""
        if self.sample is None or writer is None:
            return None
        model.eval()
        generator = torch.Generator(self.device)
        generator.manual_seed(self.cfg.optim.seed)
        with torch.no_grad():
            views = self.eval_inputs(self.sample, generator)
            images = [target_image(views["onehot"], self.atlas, self.task.target)[0],
                      model(views["onehot"])[0], model(views["soft"])[0]]
        border = torch.ones(images[0].shape[0], max(1, self.model_config.font_res // 2), device=self.device)
        row = torch.cat([images[0], border, images[1], border, images[2]], dim=1).float().cpu().numpy()
        writer.add_image("val/target_onehot_soft", row, epoch, dataformats="HW")
        return None

    def meta(self) -> dict[str, Any]:
        return {"kind": "renderer", "preset": self.cfg.model.preset, "model": dataclasses.asdict(self.model_config),
                "corpus": self.cfg.data.corpus, "config": config.to_dict(self.cfg)}


def train_func(loop_config: dict[str, Any]) -> None:
    """The Ray Train per-worker entry point."""
    run(RendererTask, loop_config["job"])


def train_renderer(cfg: RendererTrainConfig, explicit: set[str] = frozenset(), callbacks: Sequence[Any] = ()) -> Any:
    """Check everything that can be checked on the driver, then train; returns Ray's Result."""
    from asciiray.train import runner

    cfg, plan = runner.prepare(cfg, "renderer", lambda cfg: renderer_config(cfg).grid, explicit)
    datasets = runner.corpus_datasets(cfg, plan, renderer_config(cfg).grid)
    return runner.launch(train_func, cfg, "renderer", plan, datasets, ("val/loss", "min"), callbacks)
