"""Glyph atlas and the renderers that turn character grids into images.

Training renders use ink = 1 on background = 0, so a rendered grid is an ink
map a loss can compare. Pictures for people (the second half) are drawn
apart, at a display size: dark ink on white paper, cropped to the ink,
labelled.

The atlas comes from DejaVu Sans Mono as shipped inside matplotlib, rasterised
with Pillow/FreeType, so no system font is needed and every machine renders
the same pixels.
"""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from asciiray import storage
from asciiray.charset import ALPHABET, NUM_CHARS, SPACE, ink_box
from asciiray.errors import UserError

FONT_PATH = Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSansMono.ttf"

# Glyphs are drawn this many times larger than the cell, then area-averaged down,
# so small cells get anti-aliased shapes instead of FreeType's hinted pixel soup.
_SUPERSAMPLE = 8


def one_hot(codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot [B, 95, S, S] of integer code grids [B, S, S], made on their device (the VAE's input).

    Same values and (channels-last) strides as
    F.one_hot(codes.long(), 95).permute(0, 3, 1, 2).to(dtype), without the int64
    intermediate; the layout lets every 95-channel tensor downstream keep the
    characters contiguous. Made in the dtype its consumer computes in (0 and 1
    are exact in every float type), so autocast need not cast a float32 copy.
    """
    out = torch.zeros(*codes.shape, NUM_CHARS, device=codes.device, dtype=dtype)
    return out.scatter_(-1, codes.long().unsqueeze(-1), 1.0).permute(0, 3, 1, 2)


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
    return torch.from_numpy(_rasterise(font_res, font_res, font_zoom))


def _rasterise(width: int, height: int, font_zoom: float = 1.0) -> np.ndarray:
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
        """The image of integer code grids [B, S, S]: forward of their one-hot."""
        return self(one_hot(codes))

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


# Pictures for people: drawn at a display size of their own, whatever the training font_res, glyphs in the
# font's own proportions (cells about twice as tall as wide, as in a terminal), cropped to the ink, labelled.
DISPLAY_CELL_WIDTH = 10
LABEL_SIZE = 13
_GAP = 12
_PAPER, _RULE, _LABEL = 255, 200, 90


@functools.lru_cache(maxsize=None)
def display_atlas(cell_width: int = DISPLAY_CELL_WIDTH) -> np.ndarray:
    """[95, h, w] float32 ink maps for pictures: w = cell_width pixels, h as the font's line height."""
    unit = ImageFont.truetype(str(FONT_PATH), 1000)
    ascent, descent = unit.getmetrics()
    return _rasterise(cell_width, round(cell_width * (ascent + descent) / unit.getlength("M")))


def _draw(grid: np.ndarray, box: tuple[slice, slice]) -> Image.Image:
    """The cells of `box` of a code grid [S, S], dark ink on paper, with a margin of one cell width."""
    atlas = display_atlas()
    _, h, w = atlas.shape
    tiles = atlas[np.asarray(grid)[box].astype(np.int64)]  # [R, C, h, w]
    rows, cols = tiles.shape[:2]
    ink = tiles.transpose(0, 2, 1, 3).reshape(rows * h, cols * w)
    pixels = np.round((1.0 - np.clip(ink, 0.0, 1.0)) * 255.0).astype(np.uint8)
    return Image.fromarray(np.pad(pixels, w, constant_values=_PAPER), mode="L")


def _labelled(image: Image.Image, label: str) -> Image.Image:
    """The label above the image, both at the left."""
    font = ImageFont.truetype(str(FONT_PATH), LABEL_SIZE)
    height = LABEL_SIZE + 6
    out = Image.new("L", (max(image.width, round(font.getlength(label)) + 8), image.height + height), _PAPER)
    ImageDraw.Draw(out).text((4, 3), label, fill=_LABEL, font=font)
    out.paste(image, (0, height))
    return out


def _row(images: list[Image.Image], rule: bool = False) -> Image.Image:
    """Images side by side, tops aligned, a gap (with a thin grey rule, if asked) between them."""
    width = sum(i.width for i in images) + _GAP * (len(images) - 1)
    out = Image.new("L", (width, max(i.height for i in images)), _PAPER)
    x = 0
    for n, image in enumerate(images):
        if n and rule:
            ImageDraw.Draw(out).line([(x - _GAP // 2, 0), (x - _GAP // 2, out.height)], fill=_RULE)
        out.paste(image, (x, 0))
        x += image.width + _GAP
    return out


def stack_pictures(images: list[Image.Image]) -> Image.Image:
    """Pictures one under the other, left-aligned."""
    out = Image.new("L", (max(i.width for i in images), sum(i.height for i in images)), _PAPER)
    y = 0
    for image in images:
        out.paste(image, (0, y))
        y += image.height
    return out


def pairs_picture(inputs: np.ndarray, outputs: np.ndarray, names: list[str] | None = None) -> Image.Image:
    """Input | output rows of code grids [N, S, S], each pair cropped to the union of its ink, labelled
    (and titled with its name, if given)."""
    rows = []
    for i, (a, b) in enumerate(zip(inputs, outputs)):
        box = ink_box(np.stack([a, b]))
        row = _row([_labelled(_draw(a, box), "input"), _labelled(_draw(b, box), "reconstruction")], rule=True)
        rows.append(_labelled(row, names[i]) if names else row)
    return stack_pictures(rows)


def sheet_picture(grids: np.ndarray, labels: list[str], columns: int = 0) -> Image.Image:
    """A contact sheet: each grid cropped to its own ink and labelled (blank ones said so), in columns of one
    width, `columns` a row (0: about square)."""
    panels = [_labelled(_draw(g, ink_box(g[None])), label + ("" if g.any() else " (blank)"))
              for g, label in zip(grids, labels)]
    columns = columns or max(1, math.ceil(math.sqrt(len(panels))))
    width = max(p.width for p in panels)
    slots = []
    for panel in panels:
        slot = Image.new("L", (width, panel.height), _PAPER)
        slot.paste(panel, (0, 0))
        slots.append(slot)
    return stack_pictures([_row(slots[i:i + columns], rule=True) for i in range(0, len(slots), columns)])


def frame_pictures(grids: np.ndarray, labels: list[str]) -> list[Image.Image]:
    """Frames of one size: every grid cropped to the union of all their ink (nothing jumps), labelled."""
    box = ink_box(grids)
    return [_labelled(_draw(g, box), label) for g, label in zip(grids, labels)]


def strip_picture(frames: list[Image.Image]) -> Image.Image:
    """Frames in one row."""
    return _row(frames)


def thumbnails(grids: np.ndarray, size: int) -> np.ndarray:
    """[N, 3, size, size] float32 images in [0, 1] (white paper): each grid cropped to its ink, shrunk
    to fit the square if need be, centred. TensorBoard's projector sprites."""
    out = np.ones((len(grids), 3, size, size), dtype=np.float32)
    for i, grid in enumerate(grids):
        image = _draw(grid, ink_box(grid[None]))
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        top, left = (size - image.height) // 2, (size - image.width) // 2
        out[i, :, top:top + image.height, left:left + image.width] = np.asarray(image, dtype=np.float32) / 255.0
    return out


def save_picture(path: str, picture: Image.Image | list[Image.Image], frame_ms: int = 150) -> None:
    """A picture as PNG, or frames as a looping GIF whose first and last frames are held longer;
    `path` is a local path or an s3:// URI."""
    buffer = io.BytesIO()
    if isinstance(picture, list):
        durations = [frame_ms] * len(picture)
        durations[0] = durations[-1] = frame_ms * 4
        picture[0].save(buffer, format="GIF", save_all=True, append_images=picture[1:], duration=durations, loop=0)
    else:
        picture.save(buffer, format="PNG")
    storage.write_bytes(path, buffer.getvalue())
