"""encode_many: the vectorised encode is byte for byte `encode`, and fails where `encode` fails."""

from __future__ import annotations

import numpy as np
import pytest

from asciiray import charset, corpus
from asciiray.charset import InvalidPiece, encode, encode_many
from asciiray.embedded import DEFAULT_CORPUS


def one_by_one(texts: list[str], size: int) -> np.ndarray:
    return np.stack([encode(t, size) for t in texts]) if texts else np.zeros((0, size, size), np.uint8)


def test_encode_many_equals_encode_on_the_embedded_corpus():
    texts = corpus.read_table(DEFAULT_CORPUS, columns=["text"])["text"].to_pylist()
    fitting = [t for t in texts if max(charset.shape(t)) <= 64]
    assert len(fitting) > 10_000
    got = encode_many(fitting)
    assert got.dtype == np.uint8 and got.shape == (len(fitting), 64, 64)
    assert np.array_equal(got, one_by_one(fitting, 64))
    # Numpy object arrays (what a Ray Data batch holds) work the same as lists.
    assert np.array_equal(encode_many(np.array(fitting[:100], dtype=object)), got[:100])


def edge_cases(s: int) -> dict[str, list[str]]:
    """Batches of pieces at the limits of an s x s grid."""
    return {
        "one character": ["x"],
        "tilde, the largest code": ["~", "~" * s],
        "blank lines inside": ["a\n\n\nb", "ab\n\ncd\n \n e"],
        "width == S": ["#" * s, "a\n" + "~" * s + "\nb"],
        "height == S": ["\n".join(["x"] * s), "\n".join(["x", *[""] * (s - 2), "y"])],
        "S x S": ["\n".join([("0123456789" * 7)[:s - 1] + "~"] * s)],
        "odd and even padding": ["ab", "abc", "a\nb", "a\nb\nc", "abcd\nef\ng", "ab\nabc\nabcd"],
        "only newlines": ["\n", "\n\n"],
        "leading spaces": ["   x\n  y", " \n!"],
        "mixed batch": ["x", "~" * s, "\n".join(["y"] * s), "a\n\nb", "abc\nde"],
    }


@pytest.mark.parametrize("name", sorted(edge_cases(8)))
@pytest.mark.parametrize("size", [8, 9])
def test_encode_many_equals_encode_on_edge_cases(name, size):
    texts = edge_cases(size)[name]
    assert np.array_equal(encode_many(texts, size), one_by_one(texts, size))
    for text in texts:  # alone, and as the first and the last of a batch
        assert np.array_equal(encode_many([text], size), one_by_one([text], size))
        batch = [text, "zz\nz", text]
        assert np.array_equal(encode_many(batch, size), one_by_one(batch, size))


def test_encode_many_of_nothing():
    assert encode_many([], 8).shape == (0, 8, 8)


@pytest.mark.parametrize("bad, reason", [
    ("a\tb", "tab"), ("caf\u00e9", "non_printable"), ("a\x7fb", "non_printable"), ("a\rb", "non_printable"),
    ("\x00", "non_printable"), ("", "empty"), ("x" * 9, "over_grid"), ("\n".join("x" * 9), "over_grid"),
])
def test_encode_many_raises_what_encode_raises(bad, reason):
    with pytest.raises(InvalidPiece) as expected:
        encode(bad, 8)
    assert expected.value.reason == reason
    for batch in ([bad], ["ok", bad], [bad, "ok", "also ok"]):
        with pytest.raises(InvalidPiece) as got:
            encode_many(batch, 8)
        assert str(got.value) == str(expected.value)


def test_encode_many_raises_for_the_first_bad_piece_in_order():
    with pytest.raises(InvalidPiece, match="over_grid"):
        encode_many(["ok", "x" * 9, "a\tb"], 8)
    with pytest.raises(InvalidPiece, match="tab"):
        encode_many(["ok", "a\tb", "x" * 9], 8)


def test_a_pair_is_cropped_to_the_inputs_ink_and_counts_the_ink_outside():
    original = charset.encode("+--+\n|ab|\n+--+", 8)
    output = original.copy()
    output[0, 0] = charset.encode("x", 8)[3, 3]  # one stray cell in the corner, outside the input's ink
    lines = charset.pair_text(original, output).split("\n")
    assert lines[0] == "+--+ | +--+" and lines[2] == "+--+ | +--+", "no blank line above or below the pair"
    assert lines[3:] == ["(1 more inked cells outside this window)"]
