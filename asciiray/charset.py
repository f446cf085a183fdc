"""The 95 printable ASCII characters, text normalisation and S x S code grids.

Grids travel as uint8 codes (code = ord(c) - 32, so space is 0) everywhere
outside the model; only the training device ever sees a one-hot tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NUM_CHARS = 95
SPACE = 0
DEFAULT_GRID = 64
ALPHABET = "".join(chr(c) for c in range(32, 127))
_NEWLINE = ord("\n")


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


def encode_many(texts: Sequence[str], size: int = DEFAULT_GRID) -> np.ndarray:
    """`encode` of many normalised pieces at once: uint8 grids [N, size, size], byte for byte the same.

    The pieces are joined into one buffer and placed with a few numpy passes over
    its bytes, an order of magnitude faster than `encode` piece by piece
    (docs/PERFORMANCE.md). If any piece is invalid or does not fit, the pieces go
    through `encode` one by one, so the same InvalidPiece is raised for the same piece.
    """
    n = len(texts)
    grids = np.zeros((n, size, size), dtype=np.uint8)
    if n == 0:
        return grids
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    try:
        data = np.frombuffer("\n".join(texts).encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError:
        data = None
    if data is None or not lengths.all() or (((data < 32) & (data != _NEWLINE)) | (data > 126)).any():
        return _encode_each(texts, size)
    # The joining newline ends each piece's last line, so the pieces' lines number consecutively in `data`.
    is_break = data == _NEWLINE
    breaks = np.flatnonzero(is_break)
    line_start = np.concatenate(([0], breaks + 1))
    line_len = np.append(breaks, len(data)) - line_start
    piece_start = np.cumsum(lengths + 1) - (lengths + 1)
    first_line = np.searchsorted(breaks, piece_start)  # newlines before each piece: its first line's number
    height = np.diff(first_line, append=len(line_start))
    width = np.maximum.reduceat(line_len, first_line)
    if height.max() > size or width.max() > size:
        return _encode_each(texts, size)
    # Where each line's first character goes in the flat output, less that character's offset in `data`.
    piece = np.repeat(np.arange(n), height)
    row = np.arange(len(line_start)) - first_line[piece] + (size - height[piece]) // 2
    origin = (piece * size + row) * size + (size - width[piece]) // 2 - line_start
    line = np.cumsum(is_break)  # for a character: the number of its line
    chars = np.flatnonzero(~is_break)
    grids.reshape(-1)[origin[line[chars]] + chars] = data[chars] - 32
    return grids


def _encode_each(texts: Sequence[str], size: int) -> np.ndarray:
    """The slow path of `encode_many`: one `encode` per piece (raises at the first bad one)."""
    return np.stack([encode(str(text), size) for text in texts])


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
    box = ink_box(grids)
    return [_rows(grid[box]) for grid in np.asarray(grids)]


def pair_text(original: np.ndarray, output: np.ndarray) -> str:
    """An input and a model's output side by side, both cut to the input's ink, so a five-line piece shows
    as five lines with no blank line above or below; ink the output put outside that window is counted."""
    original, output = np.asarray(original), np.asarray(output)
    box = ink_box(original[None])
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
