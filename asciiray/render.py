"""Glyph atlas and the differentiable renderers that turn character grids into images for the losses.

Training renders use ink = 1 on background = 0, so a rendered grid is an ink
map a loss can compare. Pictures for people are drawn from the same font by
`asciiray.pictures`.

The atlas comes from DejaVu Sans Mono as shipped inside matplotlib, rasterised
with Pillow/FreeType, so no system font is needed and every machine renders
the same pixels.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from asciiray.charset import ALPHABET, NUM_CHARS, SPACE
from asciiray.errors import UserError

FONT_PATH = Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSansMono.ttf"

# Glyphs are drawn this many times larger than the cell, then area-averaged down,
# so small cells get anti-aliased shapes instead of FreeType's hinted pixel soup.
_SUPERSAMPLE = 8


class _OneHotStraightThrough(torch.autograd.Function):
    """Forward: the one-hot of `codes` in the dtype and layout of `soft` [..., 95].
    Backward: the gradient goes to `soft` unchanged (the straight-through estimator)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, codes: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(soft).scatter_(-1, codes.long().unsqueeze(-1), 1.0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, grad


def straight_through_one_hot(codes: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """The one-hot [..., 95] of `codes` [...], whose gradient flows to `soft` [..., 95] unchanged."""
    return _OneHotStraightThrough.apply(codes, soft)


class _GlyphsStraightThrough(torch.autograd.Function):
    """Forward: the glyphs of `codes`, i.e. render_probs of their one-hot, by a gather.
    Backward: render_probs's gradient, sent to `soft` [B, S, S, 95]; render_probs is
    linear, so its gradient is the same at the one-hot as anywhere else."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, codes: torch.Tensor, soft: torch.Tensor,
                atlas: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(atlas)
        return render_codes(codes, atlas)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        (atlas,) = ctx.saved_tensors
        c, r = atlas.shape[0], atlas.shape[-1]
        b, s = grad.shape[0], grad.shape[1] // r
        with torch.autocast(device_type=grad.device.type, enabled=False):
            tiles = grad.float().reshape(b, s, r, s, r).permute(0, 1, 3, 2, 4).reshape(-1, r * r)
            probs = tiles @ atlas.to(grad.device, torch.float32).reshape(c, r * r).t()
        return None, probs.reshape(b, s, s, c), None


@functools.lru_cache(maxsize=None)
def glyph_atlas(font_res: int = 8, font_zoom: float = 1.0) -> torch.Tensor:
    """[95, r, r] float32 ink maps in [0, 1]; glyph i is chr(i + 32). Cached: do not mutate.

    One character cell of the font (advance width x line height) is stretched
    to fill the square r x r cell, because grids are rendered on square cells;
    `font_zoom` scales the glyph about the cell centre (above 1 it is cropped).
    """
    if int(font_res) != font_res or font_res < 2:
        raise UserError(f"font_res = {font_res!r} is too small: use an integer of at least 2 pixels per cell")
    if not font_zoom > 0:
        raise UserError(f"font_zoom = {font_zoom!r} must be positive: use e.g. 1.0")
    return torch.from_numpy(rasterise(font_res, font_res, font_zoom))


def rasterise(width: int, height: int, font_zoom: float = 1.0) -> np.ndarray:
    """[95, height, width] float32 ink maps: one character cell of the font (advance width x line height)
    stretched to width x height pixels, the glyph scaled by `font_zoom` about the cell centre."""
    tall = height * _SUPERSAMPLE
    unit = ImageFont.truetype(str(FONT_PATH), 1000)
    ascent, descent = unit.getmetrics()
    size = tall * 1000 / (ascent + descent)
    wide = max(1, round(unit.getlength("M") * size / 1000))
    font = ImageFont.truetype(str(FONT_PATH), max(1, round(size * font_zoom)))
    glyphs = np.zeros((NUM_CHARS, height, width), dtype=np.float32)
    for code, char in enumerate(ALPHABET):
        if code == SPACE:
            continue
        canvas = Image.new("L", (wide, tall), 0)
        # Anchor "mm": the middle of the advance and of ascender..descender, i.e. the cell centre.
        ImageDraw.Draw(canvas).text((wide / 2, tall / 2), char, fill=255, font=font, anchor="mm")
        small = canvas.resize((width, height), Image.Resampling.BOX)
        glyphs[code] = np.asarray(small, dtype=np.float32) / 255.0
    return glyphs


def render_codes(codes: torch.Tensor, atlas: torch.Tensor) -> torch.Tensor:
    """Images [B, H*r, W*r] of code grids [B, H, W] (square for the models, any shape for display): glyph per cell."""
    b, h, w = codes.shape
    r = atlas.shape[-1]
    tiles = F.embedding(codes.long(), atlas.to(codes.device).flatten(1))  # [B, H, W, r * r]: a row lookup
    return tiles.reshape(b, h, w, r, r).permute(0, 1, 3, 2, 4).reshape(b, h * r, w * r)


def render_probs(probs: torch.Tensor, atlas: torch.Tensor) -> torch.Tensor:
    """Images [B, S*r, S*r] of per-cell character distributions [B, 95, S, S], in fp32.

    Each cell is the probability-weighted sum of the glyphs, so the image is an
    exactly differentiable (linear) function of `probs`; one-hot input gives
    the same image as `render_codes`.
    """
    b, c, s, _ = probs.shape
    r = atlas.shape[-1]
    with torch.autocast(device_type=probs.device.type, enabled=False):
        flat = probs.float().permute(0, 2, 3, 1).reshape(-1, c)
        tiles = flat @ atlas.to(probs.device, torch.float32).reshape(c, r * r)
    return tiles.reshape(b, s, s, r, r).permute(0, 1, 3, 2, 4).reshape(b, s * r, s * r)


class Renderer(torch.nn.Module):
    """Maps character distributions [B, 95, S, S] to ink images [B, S*r, S*r]."""

    differentiable: bool = False

    def __init__(self, font_res: int, font_zoom: float = 1.0) -> None:
        super().__init__()
        self.font_res = font_res
        self.font_zoom = font_zoom
        # A copy, so moving or editing the module never touches the shared cache.
        self.register_buffer("atlas", glyph_atlas(font_res, font_zoom).clone(), persistent=False)

    def _check(self, probs: torch.Tensor) -> None:
        if probs.dim() != 4 or probs.shape[1] != NUM_CHARS:
            raise ValueError(f"expected character scores of shape [B, {NUM_CHARS}, S, S], got {list(probs.shape)}")

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """The image of integer code grids [B, S, S]: what forward draws of their one-hot."""
        raise NotImplementedError

    def straight_through(self, codes: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        """The image of a sample: that of one-hot `codes` [B, S, S] forward, and backward the
        gradient of the image of `soft` [B, S, S, 95] (characters last) at that one-hot."""
        return self(straight_through_one_hot(codes, soft).movedim(-1, 1))


class _AtlasRenderer(Renderer):
    """A renderer whose image of a one-hot grid is its glyphs, so code grids need no one-hot."""

    def from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return render_codes(codes, self.atlas)


class DiscreteRenderer(_AtlasRenderer):
    """The glyph of each cell's most likely character: what a reader sees; no gradient."""

    differentiable = False

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        self._check(probs)
        return render_codes(probs.argmax(1), self.atlas)


class ContinuousRenderer(_AtlasRenderer):
    """Probability-weighted glyphs: an exactly differentiable stand-in for the discrete one."""

    differentiable = True

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        self._check(probs)
        return render_probs(probs, self.atlas)

    def straight_through(self, codes: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        """As Renderer.straight_through, without a one-hot: a gather forward, a matmul backward."""
        self._check(soft.movedim(-1, 1))
        return _GlyphsStraightThrough.apply(codes, soft, self.atlas)


# The renderers drawn from the glyph atlas, by name; asciiray.models.make_renderer adds trained ones (neural:...).
ATLAS_RENDERERS: dict[str, type[Renderer]] = {"continuous": ContinuousRenderer, "discrete": DiscreteRenderer}
NEURAL_PREFIX = "neural:"
