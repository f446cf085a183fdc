"""`asciiray train` on the suite's real local Ray: DDP, checkpoints, resume, S3, a non-finite loss, learning, bad
input (a killed worker's restart: test_reliability)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from asciiray.config import replace
from asciiray.cli import main
from asciiray.errors import UserError
from tests.conftest import history, train_config as config

pytestmark = pytest.mark.usefixtures("ray_session")


def test_two_workers_see_disjoint_shards_shuffled_every_epoch(tiny_corpus, tmp_path):
    import hashlib

    import ray.train
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from asciiray import data
    from asciiray.config import build
    from asciiray.train.job import Job
    from asciiray.train.loop import Task
    from asciiray.train.options import TrainConfig

    p = data.plan(tiny_corpus, 16, 0.1)
    out = tmp_path / "seen"
    out.mkdir()

    def train_func(config):
        job = Job(kind="vae", cfg=build(TrainConfig, {"batch_size": 16}), run_uri="", precision="32", plan=None)
        task = Task(job, torch.device("cpu"))
        rank = ray.train.get_context().get_world_rank()
        for epoch in range(2):
            digests = [hashlib.sha1(g.numpy().tobytes()).hexdigest() for b in task.shard_codes("train") for g in b]
            (out / f"{rank}-{epoch}").write_text("\n".join(digests))
        ray.train.report({})

    TorchTrainer(train_func, scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                 run_config=RunConfig(name="shards", storage_path=str(tmp_path)),
                 datasets=data.datasets(p, 16, 0.1)).fit()
    seen = {(r, e): (out / f"{r}-{e}").read_text().split() for r in (0, 1) for e in (0, 1)}
    for epoch in (0, 1):
        a, b = seen[0, epoch], seen[1, epoch]
        assert a and b and not set(a) & set(b), "the workers' shards are disjoint"
        assert len(set(a + b)) == len(a + b), "no piece twice in an epoch"
        assert p.train - 1 <= len(a) + len(b) <= p.train, "an equal split drops at most world_size - 1 rows"
    assert seen[0, 0] != seen[0, 1] and seen[1, 0] != seen[1, 1], "a new order each epoch"


def test_two_worker_ddp_run_on_s3_then_resume(tiny_corpus, tmp_path, s3_bucket):
    import boto3

    from asciiray import checkpoint
    from asciiray.train import vae
    from asciiray.train.checkpoint import load_training_state

    cfg = config(tmp_path, tiny_corpus, num_workers=2, n_epochs=2, storage_path=f"s3://{s3_bucket}/runs")
    mirrors = set(Path(tempfile.gettempdir()).glob("asciiray-tb-*"))
    result = vae.train(cfg)
    assert result.metrics["epoch"] == 2
    run_dir = f"s3://{s3_bucket}/runs/t"
    assert [h["epoch"] for h in history(run_dir)] == [1, 2]

    resumed = vae.train(replace(cfg, n_epochs=3, resume=True), explicit={"optim.n_epochs", "checkpoint.resume"})
    assert resumed.metrics["epoch"] == 3
    hist = history(run_dir)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    with checkpoint.opened(run_dir) as d:
        meta, state = checkpoint.load_meta(d), load_training_state(d)
    adam_steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {meta["step"]}, "the optimizer state continued across the resume"
    keys = [o["Key"] for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
            for o in page.get("Contents", [])]
    assert any(k.startswith("runs/t/checkpoint_") and k.endswith("model.safetensors") for k in keys)
    assert any(k.startswith("runs/t/tensorboard/") for k in keys)
    assert not (tmp_path / "runs").exists(), "nothing of the run is stored locally"
    assert set(Path(tempfile.gettempdir()).glob("asciiray-tb-*")) == mirrors, "the events' local mirror is gone"

    with pytest.raises(UserError, match="already exists"):
        vae.train(cfg)
    with pytest.raises(UserError, match="preset"):
        vae.train(replace(cfg, preset="small", resume=True), explicit={"model.preset", "checkpoint.resume"})


def test_optimizer_state_round_trips_exactly(tmp_path):
    from asciiray.models import VAE, get_preset
    from asciiray.train import checkpoint

    model = VAE(get_preset("tiny"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randint(0, 95, (4, 16, 16), dtype=torch.uint8))[0].mean().backward()
    opt.step()
    checkpoint.save(tmp_path, model, {"kind": "vae"}, {"optimizer": opt.state_dict()})
    loaded = checkpoint.load_training_state(tmp_path)["optimizer"]
    for k, s in opt.state_dict()["state"].items():
        for name, value in s.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(loaded["state"][k][name]))


# The learning test's margin over the best trivial output (see ink_f1_baselines); its budget is the learned
# run's (tests.conftest.LEARNED_RUN).
LEARNING_MARGIN = 0.08


def ink_f1_baselines(codes: torch.Tensor) -> dict[str, float]:
    """val ink_f1 of output that learned nothing about the pieces' shapes, on code grids [N, S, S].

    blank: all spaces; constant: every cell the commonest inked character; over-inked: each
    piece's ink bounding box filled with that character (the old defaults' solid blocks).
    """
    import torch.nn.functional as F

    from asciiray.charset import NUM_CHARS, SPACE
    from asciiray.metrics import ratios, reconstruction_sums

    inked = codes != SPACE
    common = int(torch.bincount(codes[inked].long(), minlength=NUM_CHARS).argmax())
    block = torch.full_like(codes, SPACE)
    for grid, ink in zip(block, inked):
        rows, cols = torch.nonzero(ink, as_tuple=True)
        if len(rows):
            grid[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = common
    outputs = {"blank": torch.full_like(codes, SPACE), "constant": torch.full_like(codes, common),
               "over-inked": block}
    return {name: ratios(reconstruction_sums(F.one_hot(out.long(), NUM_CHARS).movedim(-1, 1).float(), codes))["ink_f1"]
            for name, out in outputs.items()}


@pytest.mark.integration
def test_training_learns_to_reconstruct(learned_run, tmp_path, capsys):
    """The suite's learned run (tiny preset, embedded FIGlet pieces, through `asciiray train`) beats every
    trivial output on its validation pieces."""
    import numpy as np

    from asciiray import charset, data
    from asciiray.embedded import DEFAULT_CORPUS
    from asciiray.inference import TrainedVAE

    vae = TrainedVAE.load(learned_run, "cpu")
    texts = data.validation_pieces(DEFAULT_CORPUS, 16, vae.meta["config"]["data"]["validation_prop"], 0, 600)
    codes = torch.from_numpy(np.stack([charset.encode(t, 16) for t in texts]))
    f1, baselines = vae.score()["ink_f1"], ink_f1_baselines(codes)
    assert f1 >= max(baselines.values()) + LEARNING_MARGIN, (f1, baselines)
    assert (Path(learned_run) / "tensorboard").is_dir()

    piece = tmp_path / "piece.txt"
    piece.write_text("#########\n# hello #\n#########\n")
    png = tmp_path / "pair.png"
    assert main(["reconstruct", learned_run, str(piece), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "# hello # |" in out
    assert png.stat().st_size > 0


def test_non_finite_loss_stops_without_corrupting_checkpoints(tiny_corpus, tmp_path):
    from safetensors.torch import load_file

    from asciiray.train import runner, vae

    cfg = config(tmp_path, tiny_corpus, n_epochs=3, learning_rate=1e30, grad_clip=0.0, max_nonfinite_steps=2,
                 batch_size=8)
    with pytest.raises(runner.RunStopped, match="non-finite"):
        vae.train(cfg)
    for weights in (tmp_path / "runs" / "t").glob("checkpoint_*/model.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(weights)).values())


@pytest.mark.parametrize("argv, message", [
    (["--corpus", "/nonexistent/corpus"], "corpus"),
    (["--preset", "huge"], "preset"),
    (["--n-epochs", "0"], "at least 1"),
])
def test_bad_input_is_one_line(argv, message, tmp_path, capsys):
    assert main(["train", "--storage-path", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asciiray: error:") and message in err and "\n" not in err


def test_bad_config_key_and_empty_corpus(tmp_path, capsys):
    from asciiray.corpus import CorpusBuilder

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("kl_coef: 0.1\n")
    assert main(["train", "--config", str(cfg_file)]) == 2
    assert "unknown key 'kl_coef'" in capsys.readouterr().err

    builder = CorpusBuilder()
    builder.add("\n".join(["#" * 30] * 3), ["wide"], "files")
    builder.write(str(tmp_path / "wide"))
    assert main(["train", "--corpus", str(tmp_path / "wide"), "--preset", "tiny",
                 "--storage-path", str(tmp_path / "runs")]) == 2
    assert "fits" in capsys.readouterr().err


def test_max_pieces_default_depends_on_the_corpus(tiny_corpus, tmp_path):
    from asciiray import data
    from asciiray.embedded import DEFAULT_CORPUS

    assert data.source(None, None) == (DEFAULT_CORPUS, data.EMBEDDED_PIECES)
    assert data.source(tiny_corpus, None) == (tiny_corpus, 0)
    assert data.source(None, 0) == (DEFAULT_CORPUS, 0)
    assert data.source(tiny_corpus, 7) == (tiny_corpus, 7)
    with pytest.raises(UserError, match="--max-pieces -2"):
        config(tmp_path, tiny_corpus, max_pieces=-2)


def test_a_rejected_option_leaves_no_run_behind(tiny_corpus, tmp_path):
    from asciiray.train import vae

    with pytest.raises(UserError, match="renderer 'neural:.*missing"):
        vae.train(config(tmp_path, tiny_corpus, renderer=f"neural:{tmp_path / 'missing'}"))
    assert not (tmp_path / "runs" / "t").exists(), "the next try may use the same --run-name"


def test_ray_data_info_lines_are_off_even_when_ray_data_came_first(monkeypatch):
    import logging

    import ray.train  # noqa: F401  (imports ray.data, which reads RAY_DATA_LOG_LEVEL once)

    from asciiray.runtime import ensure_ray

    logger = logging.getLogger("ray.data")
    before = logger.level
    try:
        monkeypatch.delenv("RAY_DATA_LOG_LEVEL", raising=False)
        logger.setLevel(logging.INFO)
        ensure_ray()
        executor = logging.getLogger("ray.data._internal.execution.streaming_executor")
        assert executor.getEffectiveLevel() == logging.WARNING
        monkeypatch.setenv("RAY_DATA_LOG_LEVEL", "DEBUG")
        ensure_ray()
        assert logger.level == logging.DEBUG, "a level the user set wins"
    finally:
        logger.setLevel(before)
