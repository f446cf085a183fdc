"""The neural font renderer: character distributions [B, 95, S, S] -> ink images [B, S*r, S*r].

It imitates the discrete renderer (the glyph of each cell's argmax) from soft
inputs, so that the VAE's image loss sees what a reader would see while its
gradient still reaches every character score. Layout, read top to bottom:

    1x1 conv 95 -> C (a learned per-cell embedding of the distribution)
    depth x residual 3x3 conv blocks (each cell sees its neighbours)
    1x1 conv C -> C, 1x1 conv C -> r*r (the cell's pixels)
    pixel shuffle to r x r pixels per cell, sigmoid (ink in [0, 1])

Every size is a field of `RendererConfig`, which travels in the checkpoint's
`meta.json`, so a checkpoint rebuilds its renderer with no flags.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from asciiray import config
from asciiray.charset import DEFAULT_GRID, NUM_CHARS
from asciiray.config import option
from asciiray.errors import UserError
from asciiray.models.encoding import one_hot
from asciiray.render import ATLAS_RENDERERS, NEURAL_PREFIX, Renderer


@dataclass
class RendererConfig:
    """Every size of the neural renderer; validated on construction."""

    grid: int = option(DEFAULT_GRID, "side S of the S x S character grids it is trained on")
    font_res: int = option(4, "pixels per character cell (r) of the images it draws")
    font_zoom: float = option(1.0, "font size relative to the cell, as for the glyph atlas")
    channels: int = option(64, "feature channels per cell")
    depth: int = option(3, "residual 3x3 conv blocks (the receptive field is 2*depth+1 cells)")
    head_channels: int = option(64, "channels of the per-cell 1x1 conv before the pixel layer")

    def __post_init__(self) -> None:
        for name in ("grid", "channels", "head_channels"):
            if getattr(self, name) < 1:
                raise UserError(f"renderer config: {name} = {getattr(self, name)} must be at least 1")
        if self.depth < 0:
            raise UserError(f"renderer config: depth = {self.depth} must be 0 or more")
        if int(self.font_res) != self.font_res or self.font_res < 2:
            raise UserError(f"renderer config: font_res = {self.font_res} must be an integer of at least 2")
        if not self.font_zoom > 0:
            raise UserError(f"renderer config: font_zoom = {self.font_zoom} must be positive, e.g. 1.0")


RENDERER_PRESETS: dict[str, RendererConfig] = {
    # For the VAE presets on 64 x 64 grids at their default font_res.
    "default": RendererConfig(),
    # The tiny VAE preset's 16 x 16 grids at 2 pixels per cell, for tests.
    "tiny": RendererConfig(grid=16, font_res=2, channels=16, depth=1, head_channels=32),
}


def get_renderer_preset(name: str, **overrides: object) -> RendererConfig:
    """A fresh copy of a renderer preset, with some fields replaced."""
    return config.from_preset(RENDERER_PRESETS, name, "renderer", **overrides)


class NeuralRenderer(Renderer):
    """A trained, differentiable imitation of the discrete renderer (see the module docstring)."""

    differentiable = True

    def __init__(self, cfg: RendererConfig) -> None:
        super().__init__(cfg.font_res, cfg.font_zoom)
        self.cfg = cfg
        c = cfg.channels
        self.embed = nn.Conv2d(NUM_CHARS, c, 1)
        self.blocks = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in range(cfg.depth))
        self.head = nn.Conv2d(c, cfg.head_channels, 1)
        self.pixels = nn.Conv2d(cfg.head_channels, cfg.font_res ** 2, 1)
        # Start from mostly empty paper: most pixels of ASCII art are blank.
        nn.init.constant_(self.pixels.bias, -2.0)

    def logits(self, probs: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid ink [B, S*r, S*r] in fp32, for losses that want logits."""
        self._check(probs)
        x = F.gelu(self.embed(probs))
        for block in self.blocks:
            x = x + F.gelu(block(x))
        x = self.pixels(F.gelu(self.head(x)))
        return F.pixel_shuffle(x, self.cfg.font_res)[:, 0].float()

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(probs))

    def from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """The image of integer code grids [B, S, S]: forward of their one-hot."""
        return self(one_hot(codes))

    @classmethod
    def from_checkpoint(cls, uri: str, device: str | torch.device = "cpu") -> NeuralRenderer:
        """A trained renderer from a checkpoint or run directory (local or S3), frozen: eval mode, no
        gradients to its weights."""
        from asciiray import checkpoint

        model = checkpoint.load_model(uri, "renderer", lambda model: cls(RendererConfig(**model)),
                                      "train one with `asciiray train-renderer`")
        return model.to(device).requires_grad_(False).eval()


def make_renderer(spec: str, font_res: int, font_zoom: float = 1.0, grid: int | None = None) -> Renderer:
    """The renderer a spec names: continuous or discrete (the glyph atlas), or neural:CHECKPOINT.

    A neural renderer's font size and grid travel in its checkpoint and are not
    overridden: they must equal the run's `font_res`, `font_zoom` and (when
    given) `grid`, so the images it draws are the ones the run's targets and
    displays assume; a mismatch is a UserError naming the flag to change.
    """
    if not spec.startswith(NEURAL_PREFIX):
        if spec not in ATLAS_RENDERERS:
            raise UserError(f"renderer '{spec}' is unknown: use one of {', '.join(ATLAS_RENDERERS)} or "
                            f"{NEURAL_PREFIX}CHECKPOINT")
        return ATLAS_RENDERERS[spec](font_res, font_zoom)
    uri = spec[len(NEURAL_PREFIX):]
    if not uri:
        raise UserError(f"renderer '{NEURAL_PREFIX}' names no checkpoint: use {NEURAL_PREFIX}PATH_OR_S3_URI")
    try:
        renderer = NeuralRenderer.from_checkpoint(uri)
    except UserError as e:
        raise UserError(f"renderer '{spec}': {e}") from None
    cfg = renderer.cfg
    if (cfg.font_res, cfg.font_zoom) != (font_res, font_zoom):
        raise UserError(f"renderer {uri} draws {cfg.font_res} pixels per cell at font zoom {cfg.font_zoom}, this "
                        f"run uses {font_res} at {font_zoom}: pass --font-res {cfg.font_res} --font-zoom "
                        f"{cfg.font_zoom}, or train a renderer for these sizes")
    if grid is not None and cfg.grid != grid:
        raise UserError(f"renderer {uri} was trained on {cfg.grid}x{cfg.grid} grids, this run's model uses "
                        f"{grid}x{grid}: train a renderer with a preset of that grid")
    return renderer
