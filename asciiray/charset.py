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
    """Text of a code grid [S, S], normalised (the centring padding goes away)."""
    grid = np.asarray(grid)
    if grid.ndim != 2 or grid.max(initial=0) >= NUM_CHARS:
        raise ValueError(f"expected a 2-D grid of codes below {NUM_CHARS}, got shape {grid.shape}")
    rows = ["".join(ALPHABET[c] for c in row) for row in grid.tolist()]
    return normalize("\n".join(rows))


def ink_box(grid: np.ndarray, margin: int = 0) -> tuple[slice, slice]:
    """Rows and columns of a grid's inked cells, widened by `margin` cells (the whole grid if blank)."""
    grid = np.asarray(grid)
    rows, cols = np.nonzero(grid != SPACE)
    if not len(rows):
        return slice(0, grid.shape[0]), slice(0, grid.shape[1])
    return (slice(max(0, rows.min() - margin), rows.max() + 1 + margin),
            slice(max(0, cols.min() - margin), cols.max() + 1 + margin))


def pair_text(original: np.ndarray, output: np.ndarray, margin: int = 1) -> str:
    """An input and a model's output side by side, both cut to the input's ink plus `margin` cells, so a
    five-line piece shows as about five lines; ink the output put outside that window is counted."""
    box = ink_box(original, margin)
    outside = int((np.asarray(output) != SPACE).sum() - (np.asarray(output)[box] != SPACE).sum())
    text = side_by_side(_rows(original[box]), _rows(output[box]))
    return text + (f"\n({outside} more inked cells outside this window)" if outside else "")


def _rows(grid: np.ndarray) -> str:
    """Text of a (cropped) grid, keeping its blank rows and leading spaces so two crops line up."""
    return "\n".join("".join(ALPHABET[c] for c in row).rstrip(" ") for row in np.asarray(grid).tolist())


def side_by_side(left: str, right: str, sep: str = " | ") -> str:
    """Two pieces next to each other, the left one padded to its widest line."""
    a, b = left.split("\n"), right.split("\n")
    width = max((len(line) for line in a), default=0)
    rows = max(len(a), len(b))
    a += [""] * (rows - len(a))
    b += [""] * (rows - len(b))
    return "\n".join(f"{x.ljust(width)}{sep}{y}".rstrip() for x, y in zip(a, b))
