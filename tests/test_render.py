"""Glyph atlas, discrete and continuous renderers, PNG output."""

from __future__ import annotations

import io

from pathlib import Path

import pytest
import torch
from PIL import Image

from asciiray import storage
from asciiray.charset import NUM_CHARS, SPACE
from asciiray.errors import UserError
from asciiray.models import make_renderer, one_hot
from asciiray.pictures import save_picture
from asciiray.render import FONT_PATH, ContinuousRenderer, DiscreteRenderer, glyph_atlas, render_codes, render_probs


def code(ch: str) -> int:
    return ord(ch) - 32


def test_font_is_a_monospace_font_installed_with_a_dependency():
    import matplotlib
    from PIL import ImageFont

    assert FONT_PATH.is_file() and FONT_PATH.is_relative_to(Path(matplotlib.get_data_path()))
    font = ImageFont.truetype(str(FONT_PATH), 32)
    widths = {font.getlength(ch) for ch in "iWm .#@|"}
    assert len(widths) == 1 and widths.pop() > 0, "every glyph has the same advance: a grid of cells"


@pytest.mark.parametrize("res", [2, 4, 8, 12])
def test_atlas_shape_range_and_space(res):
    atlas = glyph_atlas(res)
    assert atlas.shape == (NUM_CHARS, res, res)
    assert atlas.dtype == torch.float32
    assert atlas.min() >= 0 and atlas.max() <= 1
    assert atlas[SPACE].abs().sum() == 0
    assert (atlas.flatten(1).sum(1)[1:] > 0).all(), "every printable glyph but space has ink"


def test_glyphs_differ_and_are_cached():
    atlas = glyph_atlas(8)
    assert not torch.allclose(atlas[code("A")], atlas[code("B")])
    assert atlas.max() == pytest.approx(1.0, abs=0.05)
    # '_' sits at the bottom of the cell, '^' at the top.
    rows = torch.arange(8.0)
    centre = lambda g: float((g.sum(1) * rows).sum() / g.sum())  # noqa: E731
    assert centre(atlas[code("_")]) > centre(atlas[code("^")])
    assert glyph_atlas(8) is atlas
    assert not torch.equal(glyph_atlas(8, 1.5), atlas)


@pytest.mark.parametrize("res,zoom", [(1, 1.0), (0, 1.0), (4, 0.0)])
def test_atlas_rejects_bad_arguments(res, zoom):
    with pytest.raises(UserError):
        glyph_atlas(res, zoom)


def test_render_codes_places_glyphs():
    atlas = glyph_atlas(4)
    codes = torch.tensor([[[code("A"), SPACE], [SPACE, code("B")]]], dtype=torch.uint8)
    image = render_codes(codes, atlas)
    assert image.shape == (1, 8, 8)
    assert torch.equal(image[0, :4, :4], atlas[code("A")])
    assert torch.equal(image[0, 4:, 4:], atlas[code("B")])
    assert image[0, :4, 4:].sum() == 0 and image[0, 4:, :4].sum() == 0
    wide = render_codes(torch.tensor([[[code("A"), SPACE, code("B")]]]), atlas)  # a display strip: 1 x 3 cells
    assert wide.shape == (1, 4, 12)
    assert torch.equal(wide[0, :, 8:], atlas[code("B")]) and wide[0, :, 4:8].sum() == 0


def test_continuous_equals_discrete_on_one_hot():
    torch.manual_seed(0)
    codes = torch.randint(0, NUM_CHARS, (3, 6, 6))
    probs = one_hot(codes)
    cont, disc = ContinuousRenderer(6), DiscreteRenderer(6)
    assert torch.allclose(cont(probs), disc(probs), atol=1e-6)
    assert torch.allclose(disc(probs), render_codes(codes, glyph_atlas(6)))
    for renderer in (cont, disc):
        assert torch.allclose(renderer.from_codes(codes.to(torch.uint8)), renderer(probs))
    assert cont.differentiable and not disc.differentiable


def test_continuous_is_a_weighted_sum_and_differentiable():
    torch.manual_seed(0)
    logits = torch.randn(2, NUM_CHARS, 3, 3, requires_grad=True)
    probs = logits.softmax(1)
    image = ContinuousRenderer(4)(probs)
    atlas = glyph_atlas(4)
    expected = torch.einsum("bcij,cpq->bipjq", probs, atlas).reshape(2, 12, 12)
    assert torch.allclose(image, expected, atol=1e-6)
    image.square().sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_continuous_stays_fp32_under_autocast():
    probs = one_hot(torch.randint(0, NUM_CHARS, (1, 2, 2))).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image = render_probs(probs, glyph_atlas(4))
    assert image.dtype == torch.float32


def test_renderer_atlas_is_a_buffer_that_moves():
    renderer = make_renderer("continuous", 4)
    assert "atlas" not in renderer.state_dict()
    assert dict(renderer.named_buffers())["atlas"].shape == (NUM_CHARS, 4, 4)
    renderer.to(torch.float64)
    assert renderer.atlas.dtype == torch.float64
    assert glyph_atlas(4).dtype == torch.float32, "moving a renderer leaves the cached atlas alone"
    with pytest.raises(ValueError):
        renderer(torch.zeros(1, 3, 2, 2))


def test_make_renderer_specs():
    assert isinstance(make_renderer("discrete", 4, 1.2), DiscreteRenderer)
    renderer = make_renderer("continuous", 5)
    assert isinstance(renderer, ContinuousRenderer) and renderer.font_res == 5
    with pytest.raises(UserError, match="continuous"):
        make_renderer("fancy", 4)


def test_save_picture_to_s3(s3_bucket):
    uri = f"s3://{s3_bucket}/images/a.png"
    save_picture(uri, Image.new("L", (10, 6), 128))
    with Image.open(io.BytesIO(storage.read_bytes(uri))) as png:
        assert png.size == (10, 6)
