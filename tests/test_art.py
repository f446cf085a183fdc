"""Making art with a model trained here: sample, interpolate, explore, embed, export, local and in S3."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asciiray import storage
from asciiray.cli import main
from asciiray.cli.art import BLANK
from asciiray.inference import TrainedVAE
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

HELLO = "#########\n# hello #\n#########\n"
CAT = "=======\n= cat =\n=======\n"


@pytest.fixture(scope="module")
def vae(learned_run) -> TrainedVAE:
    return TrainedVAE.load(learned_run, "cpu")


@pytest.fixture
def pieces(tmp_path) -> tuple[str, str]:
    (tmp_path / "hello.txt").write_text(HELLO)
    (tmp_path / "cat.txt").write_text(CAT)
    return str(tmp_path / "hello.txt"), str(tmp_path / "cat.txt")


def blocks(out: str, header: str) -> list[str]:
    """The pieces printed under '== <header> ...' lines (a piece may hold blank rows)."""
    pattern = rf"\n== {header} [^\n]*\n(.*?)\n(?=\n== {header} |\nwrote |\Z)"
    return re.findall(pattern, out, flags=re.DOTALL)


def test_train_ends_with_the_projector(learned_run, vae):
    tb = Path(learned_run) / "tensorboard"
    config = (tb / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == 1 and "sprite.png" in config
    (embedding,) = tb.glob("0*/validation_mu")
    n_val = len(vae.corpus_pieces())
    mu = np.loadtxt(embedding / "tensors.tsv", delimiter="\t")
    assert mu.shape == (n_val, vae.z_dim) and n_val > 10
    metadata = (embedding / "metadata.tsv").read_text().splitlines()
    assert metadata[0] == "category\tlabels\tid\tsource" and len(metadata) == n_val + 1
    with Image.open(embedding / "sprite.png") as sprite:
        assert sprite.width == sprite.height and sprite.width >= 64 * int(np.ceil(np.sqrt(n_val)))


def test_sample_prints_cropped_pieces_and_writes_files(learned_run, vae, tmp_path, capsys):
    argv = ["sample", learned_run, "-n", "5", "--seed", "3", "-t", "0.8"]
    assert main([*argv, "--png", str(tmp_path / "sheet.png"), "--out", str(tmp_path / "txt")]) == 0
    out = capsys.readouterr().out
    texts = vae.sample(5, 0.8, seed=3).texts
    assert blocks(out, "sample") == [text or BLANK for text in texts]
    for lines in (text.split("\n") for text in texts if text):  # a blank sample prints as nothing
        assert lines[0].strip() and lines[-1].strip(), "no blank rows around the ink"
        assert min(len(x) - len(x.lstrip(" ")) for x in lines if x.strip()) == 0, "no blank columns on the left"
        assert len(lines) <= vae.grid
    files = sorted((tmp_path / "txt").iterdir())
    assert [f.name for f in files] == [f"sample-{i:03d}.txt" for i in range(1, 6)]
    assert [f.read_text() for f in files] == [t + "\n" for t in texts]
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.width >= 3 * 10 and sheet.height >= 2 * 19

    assert main(argv) == 0
    assert blocks(capsys.readouterr().out, "sample") == [text or BLANK for text in texts], "the same seed, the same"


def test_interpolation_ends_are_the_reconstructions(learned_run, vae, pieces, tmp_path, capsys):
    held_out = vae.corpus_pieces()[0]
    a, b = pieces[0], held_out.id[:12]
    gif, png = tmp_path / "morph.gif", tmp_path / "strip.png"
    assert main(["interpolate", learned_run, a, b, "--steps", "6", "--slerp", "--gif", str(gif), "--png", str(png)]) == 0
    frames = blocks(capsys.readouterr().out, "frame")
    assert len(frames) == 6
    ends = vae.reconstruct([HELLO, held_out.text])
    assert [own_crop(frames[0]), own_crop(frames[-1])] == ends.texts
    assert frames == vae.interpolate(HELLO, held_out.text, 6, "slerp").aligned_texts
    for path in ("linear", "slerp"):
        codes = vae.interpolate(HELLO, held_out.text, 6, path).codes
        assert np.array_equal(codes[[0, -1]], ends.codes)
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 6
        frame_size = image.size
    with Image.open(png) as strip:
        assert strip.height == frame_size[1] and strip.width > 6 * frame_size[0]


def own_crop(frame: str) -> str:
    """A frame printed among others (cropped to the ink of all of them) cropped to its own ink."""
    return textwrap.dedent(frame).strip("\n")


def test_export_loads_without_run_ray_or_corpus_and_reconstructs_bit_identically(learned_run, vae, tmp_path, capsys):
    out = tmp_path / "models" / "tiny-art"
    assert main(["export", learned_run, str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == vae.meta["model"] and config["grid"] == 16 and config["kind"] == "vae"
    assert config["training"]["metrics"]["val/loss"] == vae.meta["metrics"]["val/loss"]
    card = (out / "README.md").read_text()
    assert "# tiny-art" in card and f"{vae.meta['metrics']['val/char_acc']:.4f}" in card

    texts = [p.text for p in vae.corpus_pieces()] + [HELLO, CAT]
    moved = tmp_path / "elsewhere"
    (out).rename(moved)
    script = ("import sys, numpy as np; from asciiray.inference import TrainedVAE; "
              "vae = TrainedVAE.load(sys.argv[1], 'cpu'); texts = sys.stdin.read().split('\\0'); "
              "np.save(sys.argv[2], vae.reconstruct(texts).codes); "
              "assert 'ray' not in sys.modules, 'loading an exported model imports no Ray'")
    subprocess.run([sys.executable, "-c", script, str(moved), str(tmp_path / "codes.npy")], check=True,
                   input="\0".join(texts), text=True)
    assert np.array_equal(np.load(tmp_path / "codes.npy"), vae.reconstruct(texts).codes)


def test_embed_command(learned_run, tmp_path, capsys):
    logdir = tmp_path / "tb"
    assert main(["embed", learned_run, "--logdir", str(logdir), "-n", "7"]) == 0
    assert "embedded 7 validation pieces" in capsys.readouterr().out
    (embedding,) = logdir.glob("0*/validation_mu")
    assert len((embedding / "tensors.tsv").read_text().splitlines()) == 7
    assert len((embedding / "metadata.tsv").read_text().splitlines()) == 8
    assert main(["embed", learned_run, "--logdir", str(logdir), "-n", "5"]) == 0
    assert (logdir / "projector_config.pbtxt").read_text().count("embeddings {") == 1, "replaced, not appended"
    assert len((embedding / "tensors.tsv").read_text().splitlines()) == 5


def test_every_command_reads_an_s3_checkpoint(learned_run, vae, pieces, s3_bucket, tmp_path, capsys):
    run = f"s3://{s3_bucket}/runs/art"
    storage.copy_dir(learned_run, run)
    a, b = pieces
    assert main(["reconstruct", run, a, "--png", f"{run}/pairs.png"]) == 0
    assert main(["sample", run, "-n", "2", "--seed", "1", "--out", f"s3://{s3_bucket}/samples"]) == 0
    assert main(["interpolate", run, a, b, "--steps", "3", "--gif", f"s3://{s3_bucket}/morph.gif"]) == 0
    assert main(["embed", run, "-n", "4"]) == 0
    assert main(["export", run, f"s3://{s3_bucket}/models/tiny"]) == 0
    assert main(["sample", f"s3://{s3_bucket}/models/tiny", "-n", "2", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert blocks(out, "sample")[-2:] == [text or BLANK for text in vae.sample(2, seed=1).texts]
    for key in ("runs/art/pairs.png", "samples/sample-001.txt", "samples/sample-002.txt", "morph.gif",
                "runs/art/tensorboard/projector_config.pbtxt", "models/tiny/model.safetensors",
                "models/tiny/config.json", "models/tiny/README.md"):
        assert storage.exists(f"s3://{s3_bucket}/{key}"), key
    term = Terminal([run, "--seed", "1", "--steps", "4", "--hold", "0"], rows=12, cols=60, cwd=tmp_path)
    term.wait(lambda screen: "step" in screen[-1], "a status line")
    term.quit()


def renderer_checkpoint(tmp_path: Path) -> str:
    import dataclasses

    from asciiray.models import NeuralRenderer, get_renderer_preset
    from asciiray.train.checkpoint import save

    model = NeuralRenderer(get_renderer_preset("tiny"))
    (tmp_path / "renderer").mkdir()
    save(tmp_path / "renderer", model, {"kind": "renderer", "model": dataclasses.asdict(model.cfg)})
    return str(tmp_path / "renderer")


@pytest.mark.parametrize("argv, message", [
    (["sample", "{renderer}", "--out", "{out}/txt", "--png", "{out}/s.png"], "not a vae checkpoint"),
    (["interpolate", "{renderer}", "{a}", "{b}", "--gif", "{out}/m.gif"], "not a vae checkpoint"),
    (["export", "{renderer}", "{out}/model"], "not a vae checkpoint"),
    (["sample", "{missing}", "--png", "{out}/s.png"], "does not exist"),
    (["interpolate", "{run}", "{missing}", "{b}", "--gif", "{out}/m.gif"], "No such file"),
    (["reconstruct", "{run}", "{wide}", "--png", "{out}/r.png"], "does not fit"),
    (["interpolate", "{run}", "{a}", "{latin1}", "--png", "{out}/m.png"], "not UTF-8"),
    (["interpolate", "{run}", "{a}", "abcdef0123", "--png", "{out}/m.png"], "no piece"),
    (["explore", "{run}", "--files", "{a}", "{latin1}"], "not UTF-8"),
    (["sample", "{run}", "-t", "0", "--out", "{out}/txt", "--png", "{out}/s.png"], "temperature"),
    (["sample", "{run}", "--temperature", "-1", "--out", "{out}/txt"], "temperature"),
    (["sample", "{run}", "-n", "0", "--out", "{out}/txt"], "at least one sample"),
    (["explore", "{run}", "--temperature", "0"], "temperature"),
    (["interpolate", "{run}", "{a}", "{b}", "--steps", "1", "--gif", "{out}/m.gif"], "at least 2 frames"),
    (["export", "{run}", "{run}"], "already exists"),
    (["embed", "{run}", "-n", "0", "--logdir", "{out}/tb"], "at least one piece"),
])
def test_bad_input_is_one_line_and_writes_nothing(argv, message, learned_run, pieces, tmp_path, capsys):
    (tmp_path / "wide.txt").write_text("x" * 17 + "\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    out = tmp_path / "out"
    names = {"renderer": renderer_checkpoint(tmp_path), "missing": str(tmp_path / "missing"), "run": learned_run,
             "out": str(out), "a": pieces[0], "b": pieces[1], "wide": str(tmp_path / "wide.txt"),
             "latin1": str(tmp_path / "latin1.txt")}
    before = sorted(Path(learned_run).rglob("*"))
    assert main([arg.format(**names) for arg in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asciiray: error:") and message in err and "\n" not in err, err
    assert not out.exists(), "nothing half-written"
    assert sorted(Path(learned_run).rglob("*")) == before


def test_unreachable_s3_checkpoint(monkeypatch, tmp_path, capsys):
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the message is what this checks; test_reliability the retries
    for command in (["sample", "s3://nowhere/runs/art", "--png", str(tmp_path / "s.png")],
                    ["export", "s3://nowhere/runs/art", str(tmp_path / "model")]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert "s3://nowhere/runs/art" in err and "AWS_ENDPOINT_URL" in err and "\n" not in err, err
    assert not list(tmp_path.iterdir())


class Terminal:
    """`asciiray explore` under a real pseudo-terminal (pexpect), its screen read back through a terminal
    emulator (pyte). Every wait is for something on the screen, with a deadline."""

    def __init__(self, args: list[str], rows: int, cols: int, cwd: Path) -> None:
        import pexpect
        import pyte

        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.child = pexpect.spawn(sys.executable, ["-m", "asciiray", "explore", *args], dimensions=(rows, cols),
                                   env={**os.environ, "TERM": "xterm"}, cwd=str(cwd))

    def lines(self) -> list[str]:
        return list(self.screen.display)

    def _read(self, timeout: float) -> None:
        import pexpect

        try:
            self.stream.feed(self.child.read_nonblocking(65536, timeout=timeout))
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            raise AssertionError("explore ended; its last screen:\n" + "\n".join(self.lines())) from None

    def wait(self, ready, what: str, timeout: float = 120.0) -> list[str]:
        """The first screen for which `ready(lines)` holds (a loaded machine can take a minute to start one)."""
        def shown() -> list[str] | None:
            if ready(lines := self.lines()):
                return lines
            self._read(0.05)
            return None

        return wait_until(shown, what, timeout, 0, context=lambda: "the screen:\n" + "\n".join(self.lines()))

    def screens_during(self, seconds: float) -> set[tuple[str, ...]]:
        """Every screen shown over `seconds` (for what must not happen, such as frames while paused)."""
        seen = {tuple(self.lines())}
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._read(0.05)
            seen.add(tuple(self.lines()))
        return seen

    def send(self, key: str) -> None:
        self.child.send(key)

    def resize(self, rows: int, cols: int) -> None:
        self.screen.resize(rows, cols)
        self.child.setwinsize(rows, cols)

    def quit(self) -> None:
        import pexpect

        self.child.send("q")
        self.child.expect(pexpect.EOF, timeout=120)
        self.child.close()
        assert self.child.exitstatus == 0, (self.child.exitstatus, self.child.signalstatus)


def position(status: str) -> str:
    """Where the status line says the tour is: 'A -> B  step k/K' or 'at B  hold h/H'."""
    return status.split("|")[0].replace("PAUSED", "").split("saved")[0].strip()


def test_explorer_as_a_person_meets_it(learned_run, tmp_path):
    saved = tmp_path / "saved"
    term = Terminal([learned_run, "--seed", "1", "--frame-rate", "20", "--steps", "6", "--hold", "0.2",
                     "--save-dir", str(saved)], rows=14, cols=120, cwd=tmp_path)
    term.wait(lambda s: "step" in s[-1] or "hold" in s[-1], "status line")

    positions, frames = set(), set()
    term.wait(lambda s: positions.add(position(s[-1])) or frames.add(tuple(s[:-1])) or
              (len(positions) >= 8 and len(frames) >= 2), "moving frames")

    term.send(" ")
    paused = term.wait(lambda s: "PAUSED" in s[-1], "PAUSED")
    assert term.screens_during(1.0) == {tuple(paused)}, "nothing moves while paused (20 frames' time)"

    term.send(".")
    stepped = term.wait(lambda s: position(s[-1]) != position(paused[-1]), "one frame on")
    assert "PAUSED" in stepped[-1]

    term.send("s")
    shown = term.wait(lambda s: "saved explore-001.txt" in s[-1], "the save note")
    rows = [i for i, line in enumerate(shown[:-1]) if line.strip()]
    on_screen = textwrap.dedent("\n".join(x.rstrip() for x in shown[rows[0]:rows[-1] + 1]))
    assert (saved / "explore-001.txt").read_text() == on_screen + "\n", "the file holds the frame on the screen"

    term.send("+")
    term.wait(lambda s: "t=1.1" in s[-1], "temperature 1.1")
    term.send("p")
    term.wait(lambda s: "-> prior t=1.1" in s[-1], "a prior sample as the target")
    term.send("n")
    term.wait(lambda s: "->" in s[-1] and "-> prior" not in s[-1], "a corpus piece as the target")

    term.send(" ")
    resumed = term.wait(lambda s: "PAUSED" not in s[-1], "resumed")
    term.wait(lambda s: position(s[-1]) != position(resumed[-1]), "frames moving again")
    term.quit()


def test_explorer_in_a_small_terminal_says_so_and_adapts(learned_run, tmp_path):
    term = Terminal([learned_run, "--seed", "2"], rows=3, cols=24, cwd=tmp_path)
    term.wait(lambda s: "too small" in " ".join(s), "the too-small message")
    term.resize(14, 100)
    term.wait(lambda s: "step" in s[-1] or "hold" in s[-1], "the frame and its status line")
    term.resize(3, 24)
    term.wait(lambda s: "too small" in " ".join(s), "the message again")
    term.quit()
