"""Elastic training: the options it takes, and a real two-node Ray cluster whose second node is
lost mid-epoch while the run finishes every epoch, once each, on the node that is left.

The cluster is `ray start` processes on 127.0.0.1 (tests.conftest.ray_cluster), one CPU per node, so a
1-CPU worker fits on each node and nowhere else; `asciiray train --address` runs in a subprocess as a
user would run it. Losing the node is SIGKILL of every process of that node (its raylet, its workers,
its agents), what a vanished machine looks like to the rest of the cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_pieces, ray_cluster, wait_until

ROOT = Path(__file__).resolve().parents[1]
N_EPOCHS = 2
PIECES = 1200  # about 1,000 are kept (the smallest are under the corpus's size floor): 113 steps an epoch
RUN_TIMEOUT_S = 420
# The head notices a dead node after 5 missed health checks a second apart instead of 3 s apart (Ray's
# default), so the test spends its time training rather than waiting.
FAST_NODE_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}
# After a failure Ray Train first retries at the size its (up to 20 s old) view of the cluster allows; a
# worker group that cannot be placed gives up after this many seconds (default 60) and the size is
# decided again. Read by the driver and passed on to Ray Train's controller.
START_TIMEOUT = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "15"}


# --- the options, without Ray ------------------------------------------------------------------------

@pytest.mark.parametrize("value, workers", [("3", (3, 3)), ("1:4", (1, 4)), ("2:2", (2, 2))])
def test_num_workers_is_a_count_or_min_max(value, workers):
    from asciiray.train.options import ResourcesSection

    resources = ResourcesSection(num_workers=value)
    assert resources.workers() == workers and resources.elastic == (workers[0] < workers[1])


@pytest.mark.parametrize("value", ["0", "3:1", "0:2", "a:b", "1:2:3", ""])
def test_a_bad_num_workers_is_a_one_line_user_error(value):
    from asciiray.errors import UserError
    from asciiray.train.options import ResourcesSection

    with pytest.raises(UserError, match="--num-workers"):
        ResourcesSection(num_workers=value)


def test_an_elastic_run_keeps_its_global_batch_at_every_size():
    from asciiray import config
    from asciiray.train.job import per_worker_batch
    from asciiray.train.options import TrainConfig

    elastic = config.build(TrainConfig, {"num_workers": "1:4", "batch_size": 8})
    assert [per_worker_batch(elastic, world) for world in (4, 3, 2, 1)] == [8, 10, 16, 32]
    fixed = config.build(TrainConfig, {"num_workers": "4", "batch_size": 8})
    assert [per_worker_batch(fixed, world) for world in (4, 1)] == [8, 8]


def test_the_resize_check_interval_is_a_non_negative_number_of_seconds():
    from asciiray import config
    from asciiray.errors import UserError
    from asciiray.train.options import TrainConfig

    assert config.build(TrainConfig, {"resize_check_every_s": 0}).resources.resize_check_every_s == 0
    with pytest.raises(UserError, match="--resize-check-every-s"):
        config.build(TrainConfig, {"resize_check_every_s": -1})


# --- a real two-node cluster loses a node -----------------------------------------------------------

def _corpus(path: Path) -> str:
    from asciiray.corpus import CorpusBuilder

    builder = CorpusBuilder()
    for i, text in enumerate(make_pieces(PIECES)):
        builder.add(text, ["test", str(i % 3)], "files")
    builder.write(str(path))
    return str(path)


def _registered_epoch(run_dir: Path) -> int:
    """The newest epoch whose checkpoint Ray Train has registered (0: none yet).

    Ray registers a checkpoint only once its controller has collected every worker's report of it, and
    then records it in its snapshot file; a checkpoint written but not yet collected is lost to a restart
    (docs/RELIABILITY.md), so the test waits for this, not for the files alone."""
    from ray.train.v2._internal.constants import CHECKPOINT_MANAGER_SNAPSHOT_FILENAME

    try:
        snapshot = json.loads((run_dir / CHECKPOINT_MANAGER_SNAPSHOT_FILENAME).read_text())
        epochs = [r["metrics"]["epoch"] for r in snapshot["checkpoint_results"]]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    complete = [e for e in epochs if _complete(run_dir, e)]
    return max(complete, default=0)


def _complete(run_dir: Path, epoch: int) -> bool:
    """A checkpoint directory of `epoch` whose meta.json parses (Ray copies the files in one by one)."""
    for meta in run_dir.glob("checkpoint_*/meta.json"):
        try:
            if json.loads(meta.read_text())["epoch"] == epoch:
                return True
        except (OSError, ValueError, KeyError):
            continue
    return False


def _train_decisions(cluster) -> str:
    """Ray Train controller's lines about sizes, failures and restarts, for a failure message."""
    lines = []
    for path in sorted(Path(cluster.temp_dir).glob("session_*/logs/**/*")):
        if path.is_file() and path.suffix in (".log", ".out", ".err"):
            with open(path, errors="replace") as f:
                lines += [ln[:300] for ln in f if re.search(r"Detected|Deciding|FailurePolicy|resiz", ln)]
    return "\n".join(lines[-40:])


def _wait(until, what: str, driver: subprocess.Popen, log: Path, timeout_s: float = RUN_TIMEOUT_S):
    """Until `until()` holds while the driver runs; its log shows when it did not."""
    return wait_until(until, what, timeout_s, alive=lambda: driver.poll() is None,
                      context=lambda: f"driver exit code {driver.poll()}:\n{log.read_text()[-6000:]}")


@pytest.mark.integration
def test_node_lost_mid_epoch_the_run_shrinks_and_finishes_every_epoch_once(tmp_path):
    from asciiray import checkpoint

    corpus = _corpus(tmp_path / "corpus")
    run_dir, log = tmp_path / "runs" / "elastic", tmp_path / "driver.log"
    with ray_cluster(nodes=2, cpus_per_node=1, env=FAST_NODE_DEATH) as cluster:
        command = [sys.executable, "-m", "asciiray", "train", "--address", cluster.gcs, "--corpus", corpus,
                   "--preset", "tiny", "-n", str(N_EPOCHS), "-b", "4", "--num-workers", "1:2",
                   "--max-failures", "2", "--cpus-per-worker", "1", "--threads", "1", "--font-res", "2",
                   "--progress-every-s", "0.2", "--storage-path", str(tmp_path / "runs"), "--run-name", "elastic"]
        with open(log, "w") as out:
            driver = subprocess.Popen(command, env={**cluster.driver_env(), **START_TIMEOUT}, cwd=ROOT,
                                      stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            done = _wait(lambda: _registered_epoch(run_dir), "a registered checkpoint", driver, log)
            in_flight = done + 1
            assert in_flight <= N_EPOCHS, "the run ended before the node could be lost"
            _wait(lambda: re.search(rf"epoch {in_flight}/{N_EPOCHS}  step \d+/", log.read_text()),
                  f"epoch {in_flight} under way", driver, log)
            assert cluster.kill_node(1) > 0
            driver.wait(timeout=RUN_TIMEOUT_S)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait()
        output = log.read_text()
        decisions = _train_decisions(cluster)
        assert driver.returncode == 0, output[-6000:] + decisions
        assert f"done: {N_EPOCHS} epochs" in output
        assert cluster.alive_nodes() == 1

    with checkpoint.opened(str(run_dir)) as final:
        history = checkpoint.load_meta(final)["history"]
    workers = {h["epoch"]: h["workers"] for h in history}
    assert f"resuming from the checkpoint of epoch {done} on 1 worker(s)" in output, decisions
    assert [h["epoch"] for h in history] == list(range(1, N_EPOCHS + 1)), history
    assert workers[1] == 2, (workers, decisions)  # one worker on each node while both were there
    assert all(workers[e] == 1 for e in range(in_flight, N_EPOCHS + 1)), (workers, decisions)
