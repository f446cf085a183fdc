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

from asciiray import render
from asciiray.charset import NUM_CHARS, SPACE
from asciiray.checkpoint import load_model
from asciiray.errors import UserError
from asciiray.models import NeuralRenderer, RendererConfig, get_renderer_preset, one_hot
from asciiray.render import NEURAL_PREFIX, Renderer, glyph_atlas, render_codes, render_probs
from asciiray.train.loop import Task, run
from asciiray.train.options import RendererTrainConfig

log = logging.getLogger(__name__)

MAX_MARGIN = 6.0
# PSNR of an image is capped here, so a perfectly drawn (e.g. blank) image does not count as infinite.
MAX_PSNR = 100.0
EVAL_SETS = ("onehot", "soft", "random")


def renderer_config(cfg: dict[str, Any] | RendererTrainConfig) -> RendererConfig:
    """The RendererConfig a training config asks for: its preset with the non-zero overrides."""
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
    overrides = {k: get(k) for k in ("font_res", "font_zoom", "channels") if get(k)}
    if get("depth") != -1:
        overrides["depth"] = get("depth")
    return get_renderer_preset(get("preset"), **overrides)


def check(cfg: RendererTrainConfig) -> None:
    """Reject settings that would make meaningless training data or an unknown model, before any worker starts."""
    renderer_config(cfg)
    if cfg.target not in ("discrete", "continuous"):
        raise UserError(f"--target {cfg.target!r} is unknown: use discrete or continuous")
    if not 0 <= cfg.random_prop < 1:
        raise UserError(f"--random-prop {cfg.random_prop} must be in [0, 1): some of each batch must be corpus grids")
    if not 0 <= cfg.onehot_prop <= 1:
        raise UserError(f"--onehot-prop {cfg.onehot_prop} must be in [0, 1]")
    if cfg.crop < 0:
        raise UserError(f"--crop {cfg.crop} must be 0 (whole grids) or a window side in cells")
    if not 0 < cfg.temperature_min <= cfg.temperature_max:
        raise UserError(f"--temperature-min {cfg.temperature_min} and --temperature-max {cfg.temperature_max} "
                        f"must be positive, min <= max")


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
    return torch.stack([values.double().sum(), values.new_tensor(values.numel(), dtype=torch.float64)])


class RendererTask(Task):
    name = "renderer"

    def __init__(self, config: dict[str, Any], device: torch.device) -> None:
        super().__init__(config, device)
        self.model_config = renderer_config(config)
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
            self.val_generator.manual_seed(self.config["seed"] + 1000 * ray.train.get_context().get_world_rank())
        for codes in self.shard_codes(split):
            if not training and self.sample is None:
                self.sample = codes[:1]
            yield codes

    def train_inputs(self, codes: torch.Tensor) -> torch.Tensor:
        """A training batch of distributions: corpus grids (or crops), some swapped for random ones, perturbed."""
        b, s, _ = codes.shape
        crop = self.config["crop"]
        if 0 < crop < s:
            start = torch.randint(0, s - crop + 1, (b, 2), device=codes.device)
            cells = torch.arange(crop, device=codes.device)
            rows, cols = start[:, :1] + cells, start[:, 1:] + cells
            codes = codes[torch.arange(b, device=codes.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
        k = round(b * self.config["random_prop"])
        if k:
            codes = torch.cat([random_codes(k, codes.shape[-1], codes.device), codes[k:]])
        return perturb(codes, self.config["onehot_prop"], self.config["temperature_min"],
                       self.config["temperature_max"])

    def eval_inputs(self, codes: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The three held-out views of a batch of corpus grids: one-hot, soft, random (one-hot)."""
        return {
            "onehot": one_hot(codes),
            "soft": perturb(codes, 0.0, self.config["temperature_min"], self.config["temperature_max"], generator),
            "random": one_hot(random_codes(len(codes), codes.shape[-1], codes.device, generator)),
        }

    def step(self, model: torch.nn.Module, codes: torch.Tensor,
             epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target = self.config["target"]
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
        generator.manual_seed(self.config["seed"])
        with torch.no_grad():
            views = self.eval_inputs(self.sample, generator)
            images = [target_image(views["onehot"], self.atlas, self.config["target"])[0],
                      model(views["onehot"])[0], model(views["soft"])[0]]
        border = torch.ones(images[0].shape[0], max(1, self.model_config.font_res // 2), device=self.device)
        row = torch.cat([images[0], border, images[1], border, images[2]], dim=1).float().cpu().numpy()
        writer.add_image("val/target_onehot_soft", row, epoch, dataformats="HW")
        return None

    def meta(self) -> dict[str, Any]:
        return {"kind": "renderer", "preset": self.config["preset"], "model": dataclasses.asdict(self.model_config),
                "corpus": self.config["corpus"],
                "config": {f.name: self.config[f.name] for f in dataclasses.fields(RendererTrainConfig)}}


def train_func(config: dict[str, Any]) -> None:
    """The Ray Train per-worker entry point."""
    run(RendererTask, config)


def train_renderer(cfg: RendererTrainConfig, explicit: set[str] = frozenset(), callbacks: Sequence[Any] = ()) -> Any:
    """Check everything that can be checked on the driver, then train; returns Ray's Result."""
    from asciiray.train import runner

    cfg = runner.prepare(cfg, "renderer", explicit, check)
    _, datasets = runner.corpus_datasets(cfg, renderer_config(cfg).grid)
    return runner.launch(train_func, cfg, {}, datasets, callbacks)


def load_renderer(uri_or_dir: str, device: str | torch.device = "cpu") -> NeuralRenderer:
    """A trained neural renderer from a checkpoint (local or S3), frozen: eval mode, no gradients to its weights."""
    model = load_model(uri_or_dir, "renderer", lambda model: NeuralRenderer(RendererConfig(**model)),
                       "train one with `asciiray train-renderer`")
    return model.to(device).requires_grad_(False).eval()


def make_renderer(spec: str, font_res: int, font_zoom: float = 1.0, grid: int | None = None) -> Renderer:
    """The renderer named by a spec string from the config or command line.

    "neural:CHECKPOINT" loads a trained renderer (a checkpoint or run directory,
    local or s3://) frozen. Its font size and grid travel in the checkpoint and
    are not overridden: they must equal the run's `font_res`, `font_zoom` and
    (when given) `grid`, so the images it draws are the ones the run's targets
    and displays assume; a mismatch is a UserError naming the flag to change.
    """
    if not spec.startswith(NEURAL_PREFIX):
        return render.make_renderer(spec, font_res, font_zoom)
    uri = spec[len(NEURAL_PREFIX):]
    if not uri:
        raise UserError(f"renderer '{NEURAL_PREFIX}' names no checkpoint: use {NEURAL_PREFIX}PATH_OR_S3_URI")
    renderer = load_renderer(uri)
    cfg = renderer.cfg
    if (cfg.font_res, cfg.font_zoom) != (font_res, font_zoom):
        raise UserError(f"renderer {uri} draws {cfg.font_res} pixels per cell at font zoom {cfg.font_zoom}, this "
                        f"run uses {font_res} at {font_zoom}: pass --font-res {cfg.font_res} --font-zoom "
                        f"{cfg.font_zoom}, or train a renderer for these sizes")
    if grid is not None and cfg.grid != grid:
        raise UserError(f"renderer {uri} was trained on {cfg.grid}x{cfg.grid} grids, this run's model uses "
                        f"{grid}x{grid}: train a renderer with a preset of that grid")
    return renderer
