"""The 95 printable ASCII characters, text normalisation and S x S code grids.

Grids travel as uint8 codes (code = ord(c) - 32, so space is 0) everywhere
outside the model; only the training device ever sees a one-hot tensor.
"""

from __future__ import annotations

import numpy as np

NUM_CHARS = 95
SPACE = 0
DEFAULT_GRID = 64
ALPHABET = "".join(chr(c) for c in range(32, 127))


class InvalidPiece(ValueError):
    """A piece that cannot enter the corpus; `reason` is a short counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def normalize(text: str) -> str:
    """CRLF/CR to LF, trailing spaces stripped, blank lines at both ends removed."""
    lines = [line.rstrip(" ") for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def validate(text: str) -> None:
    """Raise InvalidPiece if normalised `text` holds anything but printable ASCII."""
    if not text:
        raise InvalidPiece("empty", "the piece has no visible line")
    for i, ch in enumerate(text):
        if ch == "\n" or 32 <= ord(ch) <= 126:
            continue
        if ch == "\t":
            raise InvalidPiece("tab", f"tab at offset {i}")
        raise InvalidPiece("non_printable", f"character U+{ord(ch):04X} at offset {i}")


def shape(text: str) -> tuple[int, int]:
    """(height, width) of normalised text: line count and longest line."""
    lines = text.split("\n")
    return len(lines), max(len(line) for line in lines)


def encode(text: str, size: int = DEFAULT_GRID) -> np.ndarray:
    """Centre a normalised, valid piece in a size x size uint8 grid of codes."""
    validate(text)
    height, width = shape(text)
    if height > size or width > size:
        raise InvalidPiece("over_grid", f"{height}x{width} does not fit a {size}x{size} grid")
    grid = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - height) // 2, (size - width) // 2
    for r, line in enumerate(text.split("\n")):
        codes = np.frombuffer(line.encode("ascii"), dtype=np.uint8) - 32
        grid[top + r, left : left + len(codes)] = codes
    return grid


def decode(grid: np.ndarray) -> str:
    """Text of a code grid [S, S], cropped to its ink (the centring padding goes away)."""
    return crop_texts(np.asarray(grid)[None])[0]


def ink_box(grids: np.ndarray, margin: int = 0) -> tuple[slice, slice]:
    """Rows and columns of the cells that hold ink in any of `grids` [N, S, S], widened by `margin` cells
    within the grid; the centre cell when there is no ink at all."""
    grids = np.asarray(grids)
    if grids.ndim != 3 or grids.max(initial=0) >= NUM_CHARS:
        raise ValueError(f"expected [N, S, S] grids of codes below {NUM_CHARS}, got shape {grids.shape}")
    ink = (grids != SPACE).any(0)
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if not len(rows):
        rows = cols = np.array([grids.shape[1] // 2])
    return (slice(max(0, rows[0] - margin), min(grids.shape[1], rows[-1] + 1 + margin)),
            slice(max(0, cols[0] - margin), min(grids.shape[2], cols[-1] + 1 + margin)))


def crop_texts(grids: np.ndarray) -> list[str]:
    """Texts of code grids [N, S, S], all cropped to the union of their ink, so they line up
    (a pair side by side, the frames of an interpolation); blank rows inside the box are kept."""
    rows, cols = ink_box(grids)
    return ["\n".join("".join(ALPHABET[c] for c in row).rstrip(" ") for row in grid[rows, cols].tolist())
            for grid in np.asarray(grids)]


def decode_scores(scores) -> str | list[str]:
    """Text of the argmax of per-character scores [95,S,S] or a batch [B,95,S,S]."""
    codes = scores.argmax(dim=-3).to("cpu").numpy() if hasattr(scores, "dim") else np.argmax(scores, axis=-3)
    if codes.ndim == 2:
        return decode(codes)
    return [decode(c) for c in codes]


def side_by_side(left: str, right: str, sep: str = " | ") -> str:
    """Two pieces next to each other, the left one padded to its widest line."""
    a, b = left.split("\n"), right.split("\n")
    width = max((len(line) for line in a), default=0)
    rows = max(len(a), len(b))
    a += [""] * (rows - len(a))
    b += [""] * (rows - len(b))
    return "\n".join(f"{x.ljust(width)}{sep}{y}".rstrip() for x, y in zip(a, b))
