"""`asciiray tune`: spec reading (no Ray), and on the suite's local Ray: ASHA; interrupt + resume of an
experiment in S3 with a failing trial; bad specs."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asciiray.cli import main
from asciiray.tune.spec import RUN_NAME, TRIAL_PREFIX
from tests.conftest import make_pieces, wait_until, write_corpus

SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of the checkpoints it registered


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return write_corpus(tmp_path_factory.mktemp("tune-corpus") / "tiny", make_pieces(120))


@pytest.fixture
def progress(caplog) -> pytest.LogCaptureFixture:
    """The experiment's progress lines (logged by its Tune callback on the driver)."""
    caplog.set_level(logging.INFO, logger="asciiray.tune")
    return caplog


def write_spec(tmp_path: Path, corpus: str, **overrides) -> str:
    """A tiny spec on the test corpus: 1-worker CPU trials small enough for 4 to share the suite's 2 CPUs."""
    spec = {
        "name": "exp",
        "storage_path": str(tmp_path / "runs"),
        "base": {"preset": "tiny", "corpus": corpus, "n_epochs": 3, "batch_size": 32, "font_res": 2,
                 "threads": 1},
        "space": {"kl_coeff": {"type": "loguniform", "low": 1e-5, "high": 1e-2}},
        "search": "random",
        "search_seed": 0,
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "resources": {"num_workers": 1, "cpus_per_worker": 0.2},
    }
    spec.update(overrides)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def own_history(run_uri: str) -> list[dict]:
    """What the trial's training run itself reported, from its latest checkpoint."""
    from asciiray import checkpoint

    with checkpoint.opened(run_uri) as d:
        return checkpoint.load_meta(d)["history"]


def checkpoint_epochs(run_uri: str) -> dict[str, int]:
    """Epoch of each checkpoint Ray Train has recorded as complete (the ones a restarted run resumes from).

    A checkpoint directory being written when the driver is killed is not among them: its epoch
    is trained again on resume, as it should be.
    """
    from asciiray import storage
    from asciiray.errors import UserError

    try:
        results = json.loads(storage.read_bytes(storage.join(run_uri, SNAPSHOT)))["checkpoint_results"]
    except (UserError, ValueError, KeyError):
        return {}
    return {r["checkpoint_dir_name"]: r["metrics"]["epoch"] for r in results}


def trial_runs(exp_uri: str) -> dict[str, dict[str, int]]:
    """checkpoint_epochs of each trial's run under the experiment, by trial directory name."""
    from asciiray import storage

    return {name: checkpoint_epochs(storage.join(exp_uri, name, RUN_NAME))
            for name in storage.list_dirs(exp_uri, TRIAL_PREFIX)}


@pytest.mark.integration
def test_asha_experiment_table_and_best_checkpoint(corpus, tmp_path, ray_session, capsys, progress):
    from asciiray import storage
    from asciiray import checkpoint
    from asciiray.tune import results

    # One trial at a time, in grid order. The CE scale multiplies most of the loss, so the second trial's
    # val/loss at the first rung is far above the first trial's: ASHA stops it there, whatever the timing.
    spec_path = write_spec(tmp_path, corpus, search="grid", max_concurrent=1, space={
        "loss.ce_recon_loss_scale": {"type": "grid", "values": [0.5, 4.0]},
        "kl_coeff": {"type": "choice", "values": [1e-4]},
    })
    assert main(["tune", spec_path]) == 0
    out = capsys.readouterr().out
    assert "stopped early" in out and "best val/loss" in out
    assert "stopped early after 1 epoch(s)" in progress.text and "finished after 3 epoch(s)" in progress.text

    exp_uri = str(tmp_path / "runs" / "exp")
    experiment = results.read(exp_uri)
    rows = {t.params["loss.ce_recon_loss_scale"]: t for t in experiment.trials}
    assert {k: (t.status, t.epochs) for k, t in rows.items()} == {0.5: ("done", 3), 4.0: ("stopped early", 1)}
    assert all(t.params == {"loss.ce_recon_loss_scale": k, "loss.kl_coeff": 1e-4} for k, t in rows.items())
    for t in rows.values():
        run_uri = storage.join(exp_uri, f"{TRIAL_PREFIX}{t.trial_id}", RUN_NAME)
        history = own_history(run_uri)[:t.epochs]
        assert [h["epoch"] for h in history] == list(range(1, t.epochs + 1))
        assert t.best == pytest.approx(min(h["val/loss"] for h in history))
        assert list(experiment.frames[t.trial_id]["val/loss"]) == pytest.approx([h["val/loss"] for h in history])
        assert list(Path(run_uri, "tensorboard").glob("events.out.tfevents*")), "per-trial TensorBoard events"
        with checkpoint.opened(run_uri) as d:
            stored = checkpoint.load_meta(d)["config"]
        assert stored["loss"]["ce_recon_loss_scale"] == t.params["loss.ce_recon_loss_scale"], "the trial's value"
        assert stored["loss"]["kl_coeff"] == 1e-4 and stored["model"]["preset"] == "tiny", "over the base"

    best = experiment.best
    assert best is rows[0.5] and best.best < rows[4.0].best
    assert best.checkpoint.startswith(storage.join(exp_uri, f"{TRIAL_PREFIX}{best.trial_id}", RUN_NAME,
                                                   "checkpoint_"))
    with checkpoint.opened(best.checkpoint) as d:
        assert checkpoint.load_meta(d)["metrics"]["val/loss"] == pytest.approx(best.best)
    assert f"best checkpoint: {best.checkpoint}" in out

    csv, png = tmp_path / "trials.csv", tmp_path / "trials.png"
    assert main(["tune", "results", exp_uri, "--csv", str(csv), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "best val/loss" in out and "stopped early" in out and f"best checkpoint: {best.checkpoint}" in out
    lines = csv.read_text().splitlines()
    assert lines[0].startswith("trial_id,status,config/loss.")
    assert len(lines) == 1 + sum(t.epochs for t in rows.values())
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.integration
def test_interrupted_s3_experiment_with_a_diverging_trial_resumes(corpus, tmp_path, ray_session, s3_bucket, capsys,
                                                                 progress):
    import boto3

    from asciiray.tune import results

    # Three trials one after another, stored in S3; the last one's learning rate is absurd: its loss goes
    # non-finite at once and its run stops itself in its first epoch (a dozen steps), before any checkpoint.
    # The driver is killed once two trials have a checkpoint.
    # Epochs of the tiny preset take a fraction of a second: several of them leave the second trial
    # unfinished when the kill lands. The base is given by section, as a --config file may be.
    epochs = 6
    spec_path = write_spec(tmp_path, corpus, storage_path=f"s3://{s3_bucket}/tune", search="grid",
                           scheduler="none", max_concurrent=1,
                           base={"model": {"preset": "tiny"}, "data": {"corpus": corpus, "batch_size": 8},
                                 "optim": {"n_epochs": epochs, "grad_clip": 0.0, "max_nonfinite_steps": 2},
                                 "loss": {"font_res": 2}, "checkpoint": {"keep_checkpoints": epochs},
                                 "resources": {"threads": 1}},
                           space={"optim.learning_rate": {"type": "grid", "values": [1e-3, 2e-3, 1e30]}})
    exp_uri = f"s3://{s3_bucket}/tune/exp"
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "asciiray", "tune", spec_path], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    # A guard against a hang, not a timing: on a loaded machine a trial's workers take minutes to start.
    try:
        wait_until(lambda: sum(len(ckpts) > 0 for ckpts in trial_runs(exp_uri).values()) >= 2,
                   "a second trial's checkpoint", 900, alive=lambda: driver.poll() is None,
                   context=lambda: (tmp_path / "driver.log").read_text()[-3000:])
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    before = trial_runs(exp_uri)
    done, started = sorted((c for c in before.values() if c), key=len, reverse=True)
    assert sorted(done.values()) == list(range(1, epochs + 1)), "one trial done"
    assert sorted(started.values()) == list(range(1, len(started) + 1)) and 0 < len(started) < epochs, \
        "one trial started, not finished"

    assert main(["tune", spec_path, "--resume"]) == 0
    assert "best val/loss" in capsys.readouterr().out
    # Only the callbacks Tune restores from the experiment report progress on resume.
    assert re.search(r"epoch \d+: val/loss", progress.text), "progress is shown after a resume too"
    rows = {t.params["optim.learning_rate"]: t for t in results.read(exp_uri).trials}
    good, bad = [rows[1e-3], rows[2e-3]], rows[1e30]
    assert [(t.status, t.epochs) for t in good] == [("done", epochs), ("done", epochs)]
    assert bad.status == "failed" and "non-finite" in bad.reason
    after = trial_runs(exp_uri)
    for name, ckpts in before.items():
        assert ckpts.items() <= after[name].items(), f"{name} kept the checkpoints it had"
    for t in good:
        assert sorted(after[f"{TRIAL_PREFIX}{t.trial_id}"].values()) == list(range(1, epochs + 1)), \
            f"trial {t.trial_id} trained every epoch once: none from scratch"

    assert main(["tune", "results", exp_uri]) == 0
    out = capsys.readouterr().out
    assert "non-finite" in out and f"best checkpoint: {exp_uri}/trial_" in out
    keys = [o["Key"] for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
            for o in page.get("Contents", [])]
    ckpts = {k.split("/")[2] for k in keys if k.endswith("/model.safetensors")}
    assert ckpts == {f"trial_{t.trial_id}" for t in good}, "the good trials' checkpoints are in the bucket"
    assert all(any(k.startswith(f"tune/exp/trial_{t.trial_id}/train/tensorboard/") for k in keys) for t in good)
    assert any(k.startswith(f"tune/exp/trial_{bad.trial_id}/train/stopped.json") for k in keys)
    assert not (tmp_path / "runs").exists()

    assert main(["tune", spec_path]) == 2
    assert "already exists" in capsys.readouterr().err


BASE = {"preset": "tiny", "n_epochs": 2}
GOOD_SPACE = {"kl_coeff": {"type": "loguniform", "low": 1e-5, "high": 1e-2}}


@pytest.mark.parametrize("base, space", [
    ({"preset": "tiny", "n_epochs": 2, "corpus": "corpus", "renderer": "neural:font"},
     {"kl_coeff": GOOD_SPACE["kl_coeff"], "space_deemph": {"type": "choice", "values": [1, 2]}}),
    ({"model.preset": "tiny", "optim.n_epochs": 2, "data.corpus": "corpus", "loss.renderer": "neural:font"},
     {"loss.kl_coeff": GOOD_SPACE["kl_coeff"], "loss.space_deemph": {"type": "choice", "values": [1.0, 2.0]}}),
    ({"model": {"preset": "tiny"}, "optim": {"n_epochs": 2}, "data": {"corpus": "corpus"},
      "loss": {"renderer": "neural:font"}},
     {"loss.kl_coeff": GOOD_SPACE["kl_coeff"], "space-deemph": {"type": "choice", "values": [1, 2.0]}}),
])
def test_spec_keys_flat_dotted_or_by_section(base, space, tmp_path, monkeypatch):
    from asciiray import config
    from asciiray.train.options import TrainConfig
    from asciiray.tune.spec import load_spec, spec_from_dict

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": base, "space": space, "resources": {"cpus_per_worker": 0.5},
                                    "scheduler": {"type": "asha", "max_t": 0}}))  # 0: as spec files once said
    spec = load_spec(str(path))
    assert spec.scheduler.max_t is None and spec.max_t == 2, "the base n_epochs"
    assert spec.name == "s" and spec.storage_path == str(tmp_path / "runs")
    assert list(spec.space) == ["loss.kl_coeff", "loss.space_deemph"]
    assert spec.space["loss.space_deemph"].values == (1.0, 2.0)
    assert isinstance(spec.base, TrainConfig)
    assert spec.base == config.build(TrainConfig, {
        "preset": "tiny", "n_epochs": 2, "corpus": str(tmp_path / "corpus"),
        "renderer": f"neural:{tmp_path / 'font'}", "cpus_per_worker": 0.5, "use_gpu": False})
    assert spec_from_dict(spec.to_dict(), source="stored", default_name="x") == spec, "stored spec reads back"


@pytest.mark.parametrize("base, scheduler, epochs", [
    ({"preset": "tiny"}, {"type": "asha"}, 10),
    ({"preset": "tiny"}, {"type": "asha", "max_t": 3}, 3),
    ({"preset": "tiny", "n_epochs": 4}, {"type": "asha", "max_t": 3}, 4),
])
def test_trials_are_budgeted_in_epochs(base, scheduler, epochs):
    from asciiray.tune.spec import spec_from_dict

    spec = spec_from_dict({"base": base, "space": GOOD_SPACE, "scheduler": scheduler}, source="s", default_name="s")
    assert spec.base.optim.n_epochs == epochs and spec.base.optim.max_steps is None
    assert spec.max_t == scheduler.get("max_t", epochs)


BAD_SPECS = [
    ({"schedular": "asha"}, "unknown key 'schedular'"),
    ({"base": {**BASE, "kl_coef": 0.1}}, "unknown key 'kl_coef'"),
    ({"base": {**BASE, "storage_path": "/tmp"}}, "set by the experiment"),
    ({"base": {**BASE, "resources": {"num_workers": 2}}}, "set by the experiment"),
    ({"base": {**BASE, "loss": {"kl_coeff": 0.1}}}, "both in base and in space"),
    ({"space": {"kl_coef": GOOD_SPACE["kl_coeff"]}}, "'kl_coef' is not a training option"),
    ({"space": {"kl_coeff": GOOD_SPACE["kl_coeff"], "loss.kl_coeff": GOOD_SPACE["kl_coeff"]}}, "'kl_coeff' and 'loss.kl_coeff' name the same option"),
    ({"space": {"n_epochs": {"type": "randint", "low": 1, "high": 4}}}, "cannot be searched"),
    ({"space": {"optim.n_epochs": {"type": "randint", "low": 1, "high": 4}}}, "cannot be searched"),
    ({"space": {"keep_checkpoints": {"type": "choice", "values": [1, 2]}}}, "cannot be searched"),
    ({"space": {"max_steps": {"type": "randint", "low": 10, "high": 40}}}, "cannot be searched"),
    ({"base": {**BASE, "max_steps": 50}}, "max_steps and time_budget cannot budget tune trials"),
    ({"base": {**BASE, "time_budget": 5}}, "give n_epochs instead"),
    ({"space": {"resources.threads": {"type": "choice", "values": [1, 2]}}}, "cannot be searched"),
    ({"space": {"kl_coeff": {"type": "loguniform", "low": 1e-2, "high": 1e-5}}}, "must be below high"),
    ({"space": {"kl_coeff": {"type": "loguniform", "low": 0.0, "high": 1e-2}}}, "0 < low"),
    ({"space": {"kl_coeff": {"type": "uniform", "low": -1.0, "high": 1.0}}}, "--kl-coeff -1.0 must be at least 0"),
    ({"space": {"kl_coeff": {"type": "normal", "low": 0.0, "high": 1.0}}}, "type 'normal' is unknown"),
    ({"space": {"batch_size": {"type": "uniform", "low": 8, "high": 64}}}, "use randint or choice"),
    ({"space": {"kl_coeff": {"type": "randint", "low": 0, "high": 4}}}, "use uniform or loguniform"),
    ({"space": {"precision": {"type": "uniform", "low": 0, "high": 4}}}, "not a number: use choice or grid"),
    ({"base": {"n_epochs": 2}, "space": {"preset": {"type": "choice", "values": ["tiny", "huge"]}}},
     "'model.preset' 'huge' is unknown: use one of"),
    ({"space": {}}, "space is empty"),
    ({"base": {**BASE, "log": {"validation_every": 2}}}, "validation_every 2 leaves epochs without"),
    ({"metric": "val/accuracy"}, "unknown metric 'val/accuracy'"),
    ({"metric": "val/ink_ratio"}, "unknown metric 'val/ink_ratio'"),
    ({"mode": "up"}, "mode 'up'"),
    ({"search": "grid"}, "grid needs every space entry"),
    ({"scheduler": "pbt"}, "pbt is not supported"),
    ({"scheduler": {"type": "asha", "grace_period": 5}}, "grace_period"),
    ({"num_samples": 0}, "num_samples"),
    ({"resources": {"gpus_per_worker": -1}}, "gpus_per_worker"),
    ({"base": {**BASE, "corpus": "/nonexistent/corpus"}}, "corpus"),
]


@pytest.mark.parametrize("overrides, message", BAD_SPECS)
def test_bad_spec_is_rejected_before_any_trial(overrides, message, tmp_path, capsys):
    spec = {"name": "bad", "storage_path": str(tmp_path / "runs"), "base": BASE, "space": GOOD_SPACE, **overrides}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["tune", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asciiray: error:") and message in err and "\n" not in err
    assert not (tmp_path / "runs" / "bad").exists()


@pytest.mark.parametrize("argv, message", [
    (["tune", "results"], "needs PATH"),
    (["tune", "results", "{tmp}", "--resume"], "--resume does not apply"),
    (["tune", "{tmp}/spec.yaml", "--csv", "x.csv"], "--csv does not apply"),
    (["tune", "results", "{tmp}"], "no asciiray tune experiment"),
    (["tune", "{tmp}/missing.yaml"], "does not exist"),
])
def test_tune_command_line_mistakes(argv, message, tmp_path, capsys):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
