"""A catalogue of malformed input, fed through the CLI as a user would: each gets a one-line error naming
the input, a non-zero exit, no traceback, and leaves nothing half-written (docs/RELIABILITY.md lists them)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from asciiray.cli import main
from tests.conftest import free_port, make_pieces, moto_server, write_corpus


def run(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of `asciiray ARGV` run in this process (SystemExit from argparse included)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return int(code or 0), capsys.readouterr().err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, f"exit 0 for bad input; stderr: {err}"
    assert len(lines) == 1 and "Traceback" not in err, f"not one line:\n{err}"
    assert lines[0].startswith("asciiray"), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


@pytest.fixture(scope="module")
def good_corpus(tmp_path_factory) -> str:
    return write_corpus(tmp_path_factory.mktemp("good") / "corpus", make_pieces(60))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """An untrained tiny VAE checkpoint and a tiny renderer checkpoint, written as training writes them."""
    import dataclasses

    from asciiray.models import VAE, NeuralRenderer, get_preset, get_renderer_preset
    from asciiray.train import checkpoint

    out = tmp_path_factory.mktemp("ckpts")
    vae_cfg, renderer_cfg = get_preset("tiny"), get_renderer_preset("tiny")
    for name, model, meta in (("vae", VAE(vae_cfg), {"kind": "vae", "preset": "tiny"}),
                              ("renderer", NeuralRenderer(renderer_cfg), {"kind": "renderer"})):
        (out / name).mkdir()
        cfg = vae_cfg if name == "vae" else renderer_cfg
        checkpoint.save(out / name, model, {**meta, "model": dataclasses.asdict(cfg), "corpus": "",
                                            "epoch": 1, "step": 1, "history": [], "metrics": {},
                                            "config": {"data": {"validation_prop": 0.1, "max_pieces": 0}}})
    return {name: str(out / name) for name in ("vae", "renderer")}


def train(tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "--preset", "tiny", "--storage-path", str(tmp_path / "runs"), "--run-name", "r", *extra]


def nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "runs" / "r").exists(), "a rejected run left its directory behind"


# --- config files ------------------------------------------------------------------------------------

CONFIGS = {
    "yaml syntax error": ("preset: [tiny\n", "not valid YAML"),
    "unknown key": ("kl_coef: 0.1\n", "unknown key 'kl_coef'"),
    "wrong type": ("batch_size: lots\n", "batch_size"),
    "zero size": ("batch_size: 0\n", "--batch-size 0 must be at least 1"),
    "negative epochs": ("n_epochs: -3\n", "--n-epochs -3 must be at least 1"),
    "list for a number": ("kl_coeff: [0.1, 0.2]\n", "kl_coeff"),
    "section not a mapping": ("loss: 3\n", "'loss' is a section"),
    "not a mapping": ("- preset\n- tiny\n", "must hold a mapping"),
    "binary file": (b"\x00\xff\xfe\x00", "config file"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bad_config_file(name, tmp_path, capsys):
    content, needle = CONFIGS[name]
    path = tmp_path / "run.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, err = run(train(tmp_path, "--config", str(path)), capsys)
    assert_one_line(code, err, needle)
    nothing_written(tmp_path)


def test_missing_config_file(tmp_path, capsys):
    assert_one_line(*run(train(tmp_path, "--config", str(tmp_path / "none.yaml")), capsys), "does not exist")


@pytest.mark.parametrize("argv, needle", [
    (["--learning-rate", "-1"], "--learning-rate -1.0 must be positive"),
    (["--learning-rate", "fast"], "--learning-rate 'fast' is invalid"),
    (["--num-workers", "0"], "--num-workers '0'"),
    (["--preset", "huge"], "--preset 'huge' is unknown"),
    (["--space-deemph", "sparse"], "--space-deemph 'sparse' is invalid"),
    (["--space-deemph", "0"], "--space-deemph must be positive or balanced"),
    (["--renderer", "discrete"], "--renderer 'discrete' cannot drive the image loss: use continuous"),
    (["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
])
@pytest.mark.parametrize("with_config", [False, True], ids=["alone", "beside a good config file"])
def test_bad_flag(argv, needle, with_config, tmp_path, monkeypatch, capsys):
    """Refused on the driver before Ray starts: at an address where no Ray listens, a check that came after
    joining Ray would fail about the address instead. Beside a good --config file, the flag is to blame."""
    monkeypatch.setenv("RAY_ADDRESS", "")
    config = tmp_path / "good.yaml"
    config.write_text("batch_size: 8\nloss: {kl_coeff: 0.001}\n")
    extra = ["--config", str(config)] if with_config else []
    code, err = run(train(tmp_path, "--address", "127.0.0.1:1", *extra, *argv), capsys)
    assert_one_line(code, err, needle)
    assert "good.yaml" not in err, "a flag's mistake reported as the file's"
    nothing_written(tmp_path)


def test_a_mistake_in_the_file_is_the_files_beside_good_flags(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("batch_size: 0\n")
    code, err = run(train(tmp_path, "--config", str(config), "--learning-rate", "0.01"), capsys)
    assert_one_line(code, err, f"{config}: --batch-size 0 must be at least 1")


# --- output paths ------------------------------------------------------------------------------------

# Each command's output flags, given a path that cannot be written: BAD is replaced by the path, VAE by an
# untrained checkpoint. The check comes before any work: no model is loaded, no page requested, no Ray started.
OUTPUTS = {
    "scrape --out": ["scrape", "asciiart.eu", "--out", "BAD"],
    "scrape --http-cache": ["scrape", "asciiart.eu", "--out", "FREE", "--http-cache", "BAD"],
    "corpus build --out": ["corpus", "build", "FREE", "--out", "BAD"],
    "train --storage-path": ["train", "--preset", "tiny", "--storage-path", "BAD"],
    "lr-find --png": ["lr-find", "--preset", "tiny", "--png", "BAD"],
    "tune results --csv": ["tune", "results", "FREE", "--csv", "BAD"],
    "tune results --png": ["tune", "results", "FREE", "--png", "BAD"],
    "reconstruct --png": ["reconstruct", "VAE", "--png", "BAD"],
    "sample --png": ["sample", "VAE", "--png", "BAD"],
    "sample --out": ["sample", "VAE", "--out", "BAD"],
    "interpolate --gif": ["interpolate", "VAE", "a.txt", "b.txt", "--gif", "BAD"],
    "interpolate --png": ["interpolate", "VAE", "a.txt", "b.txt", "--png", "BAD"],
    "explore --save-dir": ["explore", "VAE", "--save-dir", "BAD"],
    "embed --logdir": ["embed", "VAE", "--logdir", "BAD"],
    "export OUT": ["export", "VAE", "BAD"],
}


@pytest.mark.parametrize("where", ["impossible", "below a file"])
@pytest.mark.parametrize("name", list(OUTPUTS))
def test_unwritable_output(name, where, checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # had Ray been started first, the error would be about it
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    bad = "/proc/asciiray-forbidden/out" if where == "impossible" else str(blocker / "out")
    swap = {"BAD": bad, "VAE": checkpoints["vae"], "FREE": str(tmp_path / "free")}
    argv = [swap.get(arg, arg) for arg in OUTPUTS[name]]
    assert_one_line(*run(argv, capsys), name.split()[-1] + " " + bad, "cannot be written", "you can write to")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"], "a refused command left something behind"


def test_an_s3_output_is_probed_without_a_trace(s3_bucket):
    from asciiray import storage

    storage.check_writable(f"s3://{s3_bucket}/new/dir", "--out")
    storage.check_writable(f"s3://{s3_bucket}/new/dir/pairs.png", "--png", file=True)
    assert not storage.exists(f"s3://{s3_bucket}/new"), "the probe left a directory marker behind"


@pytest.mark.parametrize("argv, needle", [
    (["corpus", "build", "FILE", "--out", "FILE"], "--out FILE is a file: pass a directory"),
    (["sample", "VAE", "--png", "DIR"], "--png DIR is a directory: pass a file"),
])
def test_output_of_the_wrong_kind(argv, needle, checkpoints, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    swap = {"FILE": str(tmp_path / "file"), "DIR": str(tmp_path), "VAE": checkpoints["vae"]}
    for key, value in swap.items():
        needle = needle.replace(key, value)
    assert_one_line(*run([swap.get(arg, arg) for arg in argv], capsys), needle)


# --- corpora -----------------------------------------------------------------------------------------

def corpus_case(tmp_path: Path, name: str, good: str) -> tuple[str, str]:
    """A bad --corpus of kind `name` under tmp_path; (its path, what the error must say)."""
    bad = tmp_path / "bad"
    if name == "missing directory":
        return str(tmp_path / "nowhere"), "does not exist"
    bad.mkdir()
    if name == "empty directory":
        return str(bad), "no usable piece"
    if name in ("manifest missing", "manifest corrupt", "truncated parquet", "wrong schema"):
        shutil.copytree(good, bad, dirs_exist_ok=True)
        shard = bad / "part-00000.parquet"
        if name == "manifest missing":
            (bad / "manifest.json").unlink()
            return str(bad), "no usable piece"
        if name == "manifest corrupt":
            (bad / "manifest.json").write_text("{ not json")
            return str(bad), "not valid JSON"
        if name == "truncated parquet":
            shard.write_bytes(shard.read_bytes()[:200])
            return str(bad), str(bad)
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"name": ["x"], "size": [1]}), shard)
        return str(bad), str(bad)
    files = {
        "non-UTF-8 text": b"\xff\xfe caf\xe9 \xff\n" * 4,
        "binary file": bytes(range(256)) * 4,
        "empty file": b"",
        "NUL bytes": b"+-----+\n|a\x00b  |\n+-----+\n",
    }
    if name in files:
        (bad / "piece.txt").write_bytes(files[name])
        return str(bad), "no usable piece"
    if name == "sparse file far over the size limit":
        with open(bad / "huge.txt", "wb") as f:
            f.truncate(50 * 2 ** 30)  # 50 GiB of nothing on disk: it must not be read
        return str(bad), "too_large 1"
    assert name == "symlink loop"
    os.symlink(bad / "loop", bad / "loop")
    return str(bad), str(bad)


CORPORA = ["missing directory", "empty directory", "manifest missing", "manifest corrupt", "truncated parquet",
           "wrong schema", "non-UTF-8 text", "binary file", "empty file", "NUL bytes",
           "sparse file far over the size limit", "symlink loop"]


@pytest.mark.parametrize("name", CORPORA)
def test_bad_corpus(name, good_corpus, tmp_path, capsys):
    path, needle = corpus_case(tmp_path, name, good_corpus)
    started = time.monotonic()
    code, err = run(train(tmp_path, "--corpus", path), capsys)
    assert_one_line(code, err, needle)
    assert time.monotonic() - started < 60
    nothing_written(tmp_path)


# --- checkpoints -------------------------------------------------------------------------------------

def test_missing_checkpoint(tmp_path, capsys):
    assert_one_line(*run(["sample", str(tmp_path / "nowhere"), "-n", "1"], capsys), "does not exist")


def test_truncated_weights(checkpoints, tmp_path, capsys):
    bad = tmp_path / "ckpt"
    shutil.copytree(checkpoints["vae"], bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert_one_line(*run(["sample", str(bad), "-n", "1"], capsys), str(bad))


def test_renderer_checkpoint_where_a_vae_belongs(checkpoints, capsys):
    assert_one_line(*run(["sample", checkpoints["renderer"], "-n", "1"], capsys), "renderer checkpoint")


def test_checkpoint_of_another_grid_size(checkpoints, tmp_path, capsys):
    code, err = run(train(tmp_path, "--preset", "small", "--init-from", checkpoints["vae"]), capsys)
    assert_one_line(code, err, "--init-from", "16x16")
    nothing_written(tmp_path)


def test_meta_from_a_newer_version(checkpoints, tmp_path, capsys):
    bad = tmp_path / "ckpt"
    shutil.copytree(checkpoints["vae"], bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["format"] = 99
    (bad / "meta.json").write_text(json.dumps(meta))
    assert_one_line(*run(["sample", str(bad), "-n", "1"], capsys), "newer")


def test_non_positive_temperature(checkpoints, capsys):
    assert_one_line(*run(["sample", checkpoints["vae"], "-n", "1", "--temperature", "0"], capsys), "temperature")


def test_piece_that_does_not_fit(checkpoints, tmp_path, capsys):
    piece = tmp_path / "wide.txt"
    piece.write_text("#" * 40 + "\n" + "#" * 40 + "\n")
    assert_one_line(*run(["reconstruct", checkpoints["vae"], str(piece)], capsys), str(piece))


# --- S3 ----------------------------------------------------------------------------------------------

def test_unreachable_s3_endpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    # One try per request: the message is what this checks (test_reliability checks the retries, which by
    # default ride out about a minute and a half per request).
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, err = run(["train", "--preset", "tiny", "--storage-path", "s3://nowhere/runs"], capsys)
    assert_one_line(code, err, "s3://nowhere/runs", "AWS_ENDPOINT_URL")


def test_missing_bucket(s3_server, tmp_path, capsys):
    code, err = run(["train", "--preset", "tiny", "--storage-path", "s3://no-such-bucket-here/runs"], capsys)
    assert_one_line(code, err, "s3://no-such-bucket-here/runs")


@pytest.fixture
def s3_with_auth(monkeypatch):
    """A moto S3 server that checks credentials (INITIAL_NO_AUTH_ACTION_COUNT=0), on loopback."""
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        yield endpoint


@pytest.mark.integration
def test_wrong_credentials(s3_with_auth, tmp_path, capsys):
    code, err = run(["train", "--preset", "tiny", "--storage-path", "s3://bucket/runs"], capsys)
    assert_one_line(code, err, "s3://bucket/runs", "credentials")


# --- tune specs --------------------------------------------------------------------------------------

SPECS = {
    "unknown distribution": ({"space": {"kl_coeff": {"type": "gaussian", "low": 1, "high": 2}}}, "gaussian"),
    "empty space": ({"space": {}}, "space is empty"),
    "bad metric": ({"metric": "val/happiness"}, "val/happiness"),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_bad_tune_spec(name, tmp_path, capsys):
    import yaml

    spec = {"name": "x", "storage_path": str(tmp_path / "runs"), "base": {"preset": "tiny"},
            "space": {"kl_coeff": {"type": "loguniform", "low": 1e-5, "high": 1e-2}}}
    spec.update(SPECS[name][0])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert_one_line(*run(["tune", str(path)], capsys), SPECS[name][1])
    assert not (tmp_path / "runs" / "x").exists()


# --- scrape and cluster ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["scrape", "example.com", "--out", "OUT"], "invalid choice: 'example.com'"),
    (["scrape", "textart.io", "--out", "OUT", "--base-url", "ftp://mirror"], "--base-url"),
    (["scrape", "textart.io", "--out", "FILE"], "is a file"),
])
def test_bad_scrape_input(argv, needle, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = [str(tmp_path / "out") if a == "OUT" else str(tmp_path / "file") if a == "FILE" else a for a in argv]
    assert_one_line(*run(argv, capsys), needle)
    assert not (tmp_path / "out").exists()


def test_unreachable_cluster(capsys):
    code, err = run(["submit", "--address", f"http://127.0.0.1:{free_port()}", "--no-wait", "--",
                     "asciiray", "train", "--preset", "tiny"], capsys)
    assert_one_line(code, err, "127.0.0.1")
