"""Pictures of character grids for people: reconstruction pairs, contact sheets, GIF frames and strips,
TensorBoard thumbnails, saved as PNG or GIF (local or s3://).

Dark ink on white paper, cropped to the ink, labelled; the glyphs are the
training font's (`asciiray.render`), drawn at a display size of their own.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from asciiray import storage
from asciiray.charset import ink_box
from asciiray.render import FONT_PATH, rasterise

# Drawn at a display size of their own, whatever the training font_res, glyphs in the
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
    return rasterise(cell_width, round(cell_width * (ascent + descent) / unit.getlength("M")))


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
