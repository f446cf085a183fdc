"""The inference API, the model directories it reads and the pictures for people, on untrained tiny models (no Ray)."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from asciiray import charset, checkpoint, storage
from asciiray.errors import UserError
from asciiray.explore import Stop, Tour
from asciiray.inference import TrainedVAE, mix
from asciiray.models import VAE, NeuralRenderer, get_preset, get_renderer_preset
from asciiray.pictures import (display_atlas, frame_pictures, pairs_picture, save_picture, sheet_picture,
                               strip_picture, thumbnails)
from asciiray.train.checkpoint import save

PIECE = "#########\n# hello #\n#########"


@pytest.fixture
def ckpt(tmp_path) -> str:
    """An untrained tiny VAE saved as a training checkpoint would be (BatchNorm statistics made non-trivial)."""
    torch.manual_seed(0)
    model = VAE(get_preset("tiny"))
    model.train()
    with torch.no_grad():
        model(torch.randint(0, 95, (8, 16, 16), dtype=torch.uint8))
    directory = tmp_path / "run" / "checkpoint_000001"
    directory.mkdir(parents=True)
    save(directory, model.eval(), {"kind": "vae", "preset": "tiny", "model": dataclasses.asdict(model.cfg),
                                   "corpus": "", "config": {"validation_prop": 0.1}, "epoch": 1, "step": 3,
                                   "metrics": {"val/loss": 1.5}})
    return str(tmp_path / "run")


def test_decode_crops_to_ink_and_crop_texts_align():
    grid = charset.encode("  /\\\n /  \\\n/____\\", 16)
    assert charset.decode(grid) == "  /\\\n /  \\\n/____\\"
    assert charset.decode(np.zeros((16, 16), np.uint8)) == ""
    small = charset.encode("o", 16)
    assert charset.crop_texts(np.stack([grid, small])) == ["  /\\\n /  \\\n/____\\", "\n  o\n"], "blank rows in the box stay"
    rows, cols = charset.ink_box(small[None], margin=2)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (5, 5)
    corner = np.zeros((16, 16), np.uint8)
    corner[0, 0] = 1
    assert charset.ink_box(corner[None], margin=3) == (slice(0, 4), slice(0, 4)), "the margin stays in the grid"


def test_linear_and_slerp_paths():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    t = torch.linspace(0, 1, 5)
    for path in ("linear", "slerp"):
        z = mix(a, b, t, path)
        assert torch.allclose(z[0], a) and torch.allclose(z[-1], b)
    assert torch.allclose(mix(a, b, t, "slerp").norm(dim=1), torch.full((5,), 3.0)), "the great circle keeps the norm"
    assert mix(a, b, t, "linear").norm(dim=1)[2] < 2.5
    assert torch.allclose(mix(a, a, t, "slerp"), a.expand(5, 2)), "parallel ends fall back to the line"
    with pytest.raises(UserError, match="slerp"):
        mix(a, b, t, "spline")


def test_tour_glides_holds_and_moves_on():
    here, there, elsewhere = (Stop(n, torch.tensor([v])) for n, v in (("a", 0.0), ("b", 4.0), ("c", -4.0)))
    tour = Tour(here, steps=4, hold=2)
    assert tour.arrived and tour.z().item() == 0.0
    tour.go_to(there)
    zs = []
    while not tour.arrived:
        tour.advance()
        zs.append(tour.z().item())
    assert zs == [1.0, 2.0, 3.0, 4.0]
    assert not tour.wants_next
    tour.advance()
    tour.advance()
    assert tour.wants_next
    tour.go_to(elsewhere)
    tour.advance()
    tour.advance()
    tour.go_to(here)
    assert tour.a.name == "b~c" and tour.a.z.item() == 0.0, "a jump mid-glide starts where the glide was"
    smooth = Tour(here, steps=4, hold=0, smooth=True)
    smooth.go_to(there)
    smooth.advance()
    assert 0 < smooth.z().item() < 1.0, "eased: slower than the line at the start"


def test_load_sample_reconstruct_interpolate(ckpt):
    vae = TrainedVAE.load(ckpt, "cpu")
    assert vae.uri.endswith("checkpoint_000001") and vae.run_uri.endswith("run") and vae.grid == 16
    assert not vae.model.training
    mu = vae.encode([PIECE, "o"])
    assert mu.shape == (2, 16) and mu.dtype == torch.float32
    rec = vae.reconstruct([PIECE, "o"])
    assert rec.codes.shape == (2, 16, 16) and rec.codes.dtype == np.uint8 and len(rec.texts) == 2
    assert np.array_equal(vae.decode(mu).codes, rec.codes)

    first, again = vae.sample(3, 0.5, seed=7), vae.sample(3, 0.5, seed=7)
    assert first.codes.shape == (3, 16, 16) and np.array_equal(first.codes, again.codes)
    assert torch.equal(vae.prior(2, 2.0, seed=1), 2 * vae.prior(2, 1.0, seed=1))
    assert not torch.equal(vae.prior(2, seed=1), vae.prior(2, seed=2))

    for path in ("linear", "slerp"):
        frames = vae.interpolate(PIECE, "o", steps=5, path=path)
        assert frames.codes.shape == (5, 16, 16)
        assert np.array_equal(frames.codes[[0, -1]], rec.codes), "the ends are the reconstructions"
        assert len(set(map(len, frames.aligned_texts[0].split("\n")))) >= 1

    for bad in (lambda: vae.sample(2, 0.0), lambda: vae.sample(2, -1.0), lambda: vae.sample(2, float("nan"))):
        with pytest.raises(UserError, match="temperature"):
            bad()
    with pytest.raises(UserError, match="does not fit"):
        vae.encode(["x" * 17])
    with pytest.raises(UserError, match="at least 2 frames"):
        vae.interpolate(PIECE, "o", steps=1)
    with pytest.raises(UserError, match="not reachable"):
        vae.corpus_pieces()


def test_from_checkpoint_refuses_other_kinds_and_missing_dirs(tmp_path, ckpt):
    renderer = NeuralRenderer(get_renderer_preset("tiny"))
    (tmp_path / "renderer").mkdir()
    save(tmp_path / "renderer", renderer, {"kind": "renderer", "model": dataclasses.asdict(renderer.cfg)})
    with pytest.raises(UserError, match="not a vae checkpoint"):
        VAE.from_checkpoint(str(tmp_path / "renderer"))
    with pytest.raises(UserError, match="does not exist"):
        VAE.from_checkpoint(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no checkpoint_"):
        VAE.from_checkpoint(str(tmp_path))
    with pytest.raises(UserError, match="unknown"):
        TrainedVAE.load(ckpt, "gpu7")


def test_export_is_self_contained_and_bit_identical(ckpt, tmp_path):
    from asciiray.export import export

    vae = TrainedVAE.load(ckpt, "cpu")
    out = tmp_path / "exported"
    export(vae, str(out))
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == checkpoint.EXPORT_FORMAT and config["grid"] == 16
    assert config["model"] == dataclasses.asdict(get_preset("tiny"))
    assert config["charset"]["alphabet"] == charset.ALPHABET
    assert config["training"]["metrics"] == {"val/loss": 1.5} and config["training"]["epoch"] == 1
    assert "| `val/loss` | 1.5000 |" in (out / "README.md").read_text()

    again = TrainedVAE.load(str(out), "cpu")
    assert again.run_uri is None and again.meta["exported"]
    texts = [PIECE, "o", "/\\\n\\/"]
    assert np.array_equal(again.reconstruct(texts).codes, vae.reconstruct(texts).codes)
    assert np.array_equal(again.sample(4, seed=2).codes, vae.sample(4, seed=2).codes)
    with pytest.raises(UserError, match="already exists"):
        export(vae, str(out))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exported")], "no temporary left behind"


def test_pictures_for_people_are_cropped_labelled_and_large_enough(tmp_path):
    atlas = display_atlas()
    _, cell_h, cell_w = atlas.shape
    assert cell_w >= 8 and cell_h >= 2 * cell_w - 2, "at least 8 px a cell, in the font's proportions"
    a = charset.encode(PIECE, 16)
    b = charset.encode("o", 16)
    pair = pairs_picture(a[None], b[None], ["hello.txt"])
    width_cells = 9 + 9  # input and output share the input's 9-column ink box
    assert width_cells * cell_w < pair.width < width_cells * cell_w + 12 * cell_w
    assert pair.height < 3 * cell_h + 6 * cell_h, "cropped to 3 rows of ink, not 16"
    pixels = np.asarray(pair)
    assert pixels.min() == 0 and np.median(pixels) == 255, "dark ink on white paper"

    sheet = sheet_picture(np.stack([a, b, b]), ["1", "2", "3"])
    frames = frame_pictures(np.stack([a, b, a]), ["1/3", "2/3", "3/3"])
    assert len({f.size for f in frames}) == 1
    strip = strip_picture(frames)
    assert strip.width > 3 * frames[0].width and sheet.width > pair.width / 2

    thumbs = thumbnails(np.stack([a, b]), 48)
    assert thumbs.shape == (2, 3, 48, 48) and thumbs.min() >= 0 and thumbs.max() == 1.0
    assert thumbs[0].min() < 0.5, "ink is visible in the thumbnail"

    save_picture(str(tmp_path / "s.png"), sheet)
    save_picture(str(tmp_path / "m.gif"), frames, frame_ms=100)
    with Image.open(tmp_path / "s.png") as png:
        assert png.size == sheet.size and png.format == "PNG"
    with Image.open(io.BytesIO(storage.read_bytes(str(tmp_path / "m.gif")))) as gif:
        assert gif.format == "GIF" and gif.n_frames == 3 and gif.info["loop"] == 0
