"""What clusters do to runs: damaged checkpoints, killed drivers, storage outages (docs/RELIABILITY.md).

The checkpoint checks run without Ray. The rest are real runs: the suite's local
Ray for damaged checkpoints on resume and on a worker restart; `asciiray train`
subprocesses with Ray of their own for a killed driver and for S3 outages, which
a switchable loopback proxy in front of the suite's S3 server produces (a real
outage for the client, while the server keeps its buckets). Every wait is on
observable state with a deadline; every process a test starts carries a marker
variable and is killed by it afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest
import torch

from asciiray import checkpoint, storage
from asciiray.cli import main
from asciiray.config import replace
from asciiray.errors import UserError
from asciiray.train import checkpoint as train_checkpoint
from tests.conftest import CLUSTER_MARKER as MARKER
from tests.conftest import history, marked_pids, wait_until
from tests.conftest import train_config as config

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of the checkpoints it registered


def tiny_vae_checkpoint(directory: Path, epoch: int = 1, **meta) -> Path:
    """A real (untrained) tiny VAE written as a checkpoint of `epoch`, with optimizer state."""
    from asciiray.models import VAE, get_preset

    cfg = get_preset("tiny")
    torch.manual_seed(epoch)
    model = VAE(cfg)
    optimizer = torch.optim.Adam(model.parameters())
    directory.mkdir(parents=True, exist_ok=True)
    train_checkpoint.save(directory, model, {"kind": "vae", "model": dataclasses.asdict(cfg), "epoch": epoch,
                                       "config": {"validation_prop": 0.1, "font_res": 2}, "corpus": "", **meta},
                    {"optimizer": optimizer.state_dict()})
    return directory


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "tampered weights": (lambda d: flip_byte(d / checkpoint.MODEL_FILE), "model.safetensors does not match"),
    "truncated state": (lambda d: truncate(d / train_checkpoint.STATE_FILE), "state.pt is"),
    "missing state": (lambda d: (d / train_checkpoint.STATE_FILE).unlink(), "state.pt is missing"),
    "no meta.json": (lambda d: (d / checkpoint.META_FILE).unlink(), "incomplete: it has no meta.json"),
    "cut meta.json": (lambda d: truncate(d / checkpoint.META_FILE), "meta.json is unreadable"),
}


# --- checkpoint integrity, without Ray --------------------------------------------------------------

def test_a_saved_checkpoint_lists_its_files_and_verifies(tmp_path):
    ckpt = tiny_vae_checkpoint(tmp_path / "checkpoint_a")
    meta = json.loads((ckpt / checkpoint.META_FILE).read_text())
    assert meta["format"] == checkpoint.FORMAT
    assert set(meta["files"]) == {checkpoint.MODEL_FILE, train_checkpoint.STATE_FILE}
    assert meta["files"][checkpoint.MODEL_FILE]["size"] == (ckpt / checkpoint.MODEL_FILE).stat().st_size
    assert checkpoint.verify(ckpt)["epoch"] == 1
    assert sorted(p.name for p in ckpt.iterdir()) == [checkpoint.META_FILE, checkpoint.MODEL_FILE,
                                                      train_checkpoint.STATE_FILE], "no leftover partial file"


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_checkpoint_is_refused_in_one_line(kind, tmp_path, capsys):
    damage, message = DAMAGE[kind]
    ckpt = tiny_vae_checkpoint(tmp_path / "checkpoint_a")
    damage(ckpt)
    with pytest.raises(checkpoint.Damaged, match=message) as err:
        checkpoint.verify(ckpt)
    assert str(ckpt) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(checkpoint.Damaged, match=message):
        with checkpoint.opened(str(ckpt)):
            pass

    piece = tmp_path / "piece.txt"
    piece.write_text("+---+\n| a |\n+---+\n")
    assert main(["reconstruct", str(ckpt), str(piece)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asciiray: error: checkpoint ") and message in lines[0], lines
    assert str(ckpt) in lines[0] and "input | reconstruction" not in captured.out


def test_a_run_directory_stands_for_its_newest_complete_checkpoint(tmp_path, caplog):
    run = tmp_path / "run"
    for epoch in (1, 2, 3):
        tiny_vae_checkpoint(run / f"checkpoint_2026-01-0{epoch}_00-00-00.000000", epoch)
    newest = run / "checkpoint_2026-01-03_00-00-00.000000"
    flip_byte(newest / checkpoint.MODEL_FILE)
    (run / "checkpoint_2026-01-04_00-00-00.000000").mkdir()  # an upload cut short: no meta.json yet
    with caplog.at_level(logging.WARNING, logger="asciiray"):
        with checkpoint.opened(str(run)) as d:
            assert checkpoint.load_meta(d)["epoch"] == 2
    skipped = [r.getMessage() for r in caplog.records if "skipping it" in r.getMessage()]
    assert len(skipped) == 2 and "2026-01-04" in skipped[0] and "2026-01-03" in skipped[1]
    assert checkpoint.latest_in(str(run)).endswith("checkpoint_2026-01-02_00-00-00.000000")

    piece = tmp_path / "piece.txt"
    piece.write_text("+---+\n| a |\n+---+\n")
    assert main(["reconstruct", str(run), str(piece)]) == 0

    for epoch in (1, 2):
        truncate(run / f"checkpoint_2026-01-0{epoch}_00-00-00.000000" / checkpoint.MODEL_FILE)
    with pytest.raises(checkpoint.Damaged, match="has no complete checkpoint"):
        checkpoint.latest_in(str(run))


def test_resuming_falls_back_past_damaged_checkpoints_but_not_past_the_offered_one(tmp_path, caplog):
    run = tmp_path / "run"
    names = [f"checkpoint_2026-01-0{e}_00-00-00.000000" for e in (1, 2, 3, 4)]
    for epoch, name in enumerate(names, 1):
        tiny_vae_checkpoint(run / name, epoch)
    with train_checkpoint.resumed(str(run), None, announce=True) as d:
        assert d is None, "nothing offered: a fresh start"
    # Ray offers epoch 3 (epoch 4 was written by a process it never heard from): that is the one used.
    with train_checkpoint.resumed(str(run), str(run / names[2]), announce=True) as d:
        assert checkpoint.load_meta(d)["epoch"] == 3
    DAMAGE["tampered weights"][0](run / names[2])
    DAMAGE["no meta.json"][0](run / names[1])
    with caplog.at_level(logging.WARNING, logger="asciiray"):
        with train_checkpoint.resumed(str(run), str(run / names[2]), announce=True) as d:
            assert checkpoint.load_meta(d)["epoch"] == 1
    assert [r.getMessage().split(" is ")[0] for r in caplog.records] == [
        f"checkpoint {run / names[2]}", f"checkpoint {run / names[1]}"]
    caplog.clear()
    with train_checkpoint.resumed(str(run), str(run / names[2]), announce=False):
        assert not caplog.records, "only the announcing worker warns"


def test_newer_format_is_refused_and_a_meta_json_without_a_format_is_damaged(tmp_path):
    ckpt = tiny_vae_checkpoint(tmp_path / "new")
    meta = json.loads((ckpt / checkpoint.META_FILE).read_text())
    (ckpt / checkpoint.META_FILE).write_text(json.dumps({**meta, "format": checkpoint.FORMAT + 1}))
    with pytest.raises(UserError, match="written by a newer asciiray") as err:
        checkpoint.verify(ckpt)
    assert not isinstance(err.value, checkpoint.Damaged), "a newer checkpoint is not skipped as damaged"

    unversioned = tiny_vae_checkpoint(tmp_path / "unversioned")
    meta = json.loads((unversioned / checkpoint.META_FILE).read_text())
    del meta["format"], meta["files"]
    (unversioned / checkpoint.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(checkpoint.Damaged, match="names no checkpoint format 2"):
        checkpoint.verify(unversioned)


def test_the_uploader_writes_a_checkpoint_that_verifies(tmp_path):
    import ray.train

    ckpt = tiny_vae_checkpoint(tmp_path / "local")
    run = tmp_path / "run"
    stored = train_checkpoint.uploader(str(run))(ray.train.Checkpoint.from_directory(str(ckpt)), "checkpoint_x")
    assert train_checkpoint.uri_of(stored) == str(run / "checkpoint_x")
    assert checkpoint.verify(run / "checkpoint_x")["epoch"] == 1


# --- S3 outages: retries as the AWS variables say ----------------------------------------------------

class SwitchableProxy:
    """A loopback TCP proxy to `port` that can be switched off and on.

    Off, it resets every open connection and each new one as soon as it is accepted
    (counted in `refused`): to the S3 client the store is down, while the server
    behind keeps its buckets.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.up = True
        self.refused = 0
        self.open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        except OSError:
            pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if not self.up:
                    self.refused += 1
                    self._reset(client)
                    continue
                upstream = socket.create_connection(("127.0.0.1", self.target))
                self.open |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def off(self) -> None:
        with self.lock:
            self.up = False
            for sock in self.open:
                self._reset(sock)
            self.open.clear()

    def on(self) -> None:
        with self.lock:
            self.up = True

    def close(self) -> None:
        self.off()
        self.listener.close()

    def wait_refused(self, count: int, timeout_s: float, alive=lambda: True) -> None:
        """Until `count` connections were refused (the client is retrying)."""
        wait_until(lambda: self.refused >= count, f"the client to retry ({count} refused connections)",
                   timeout_s, 0.05, alive=alive, context=lambda: f"{self.refused} refused connections")


@pytest.fixture
def outage(s3_server):
    """A switchable proxy in front of the suite's S3 server."""
    p = SwitchableProxy(int(s3_server.rsplit(":", 1)[1]))
    yield p
    p.close()


@pytest.fixture
def proxy(outage, monkeypatch):
    """The switchable proxy, which this process's S3 clients go through."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", outage.endpoint)
    return outage


@pytest.mark.integration
@pytest.mark.parametrize("attempts", [1, 3])
def test_s3_requests_are_tried_as_often_as_aws_max_attempts_says(attempts, proxy, s3_bucket, monkeypatch):
    uri = f"s3://{s3_bucket}/x"
    storage.write_bytes(uri, b"hello")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", str(attempts))
    fs, path = storage.for_ray(uri)
    shipped = pickle.loads(pickle.dumps(fs))  # as Ray sends it to its controller, workers and Ray Data tasks
    proxy.off()
    for client in (fs, shipped):
        before = proxy.refused
        with pytest.raises(OSError, match="NETWORK_CONNECTION"):
            client.get_file_info(path)
        assert proxy.refused - before == attempts
    with pytest.raises(UserError, match=f"{uri}: .*NETWORK_CONNECTION") as err:
        storage.read_bytes(uri)
    assert "\n" not in str(err.value)


@pytest.mark.integration
def test_a_short_outage_is_ridden_out_by_corpus_reads_and_checkpoint_uploads(proxy, s3_bucket, tmp_path,
                                                                                 monkeypatch):
    from asciiray import corpus
    from asciiray.corpus import CorpusBuilder

    builder = CorpusBuilder()
    for i in range(20):
        builder.add(f"+{'-' * (i % 7 + 1)}+", ["test"], "files")
    uri = f"s3://{s3_bucket}/corpus"
    builder.write(uri)
    expected = corpus.read_table(uri, columns=["id"])["id"].to_pylist()
    local = tiny_vae_checkpoint(tmp_path / "ckpt")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "6")

    import ray.train

    jobs = {
        "corpus read": lambda: corpus.read_table(uri, columns=["id"])["id"].to_pylist(),
        "checkpoint upload": lambda: train_checkpoint.uri_of(train_checkpoint.uploader(f"s3://{s3_bucket}/run")(
            ray.train.Checkpoint.from_directory(str(local)), "checkpoint_x")),
    }
    results = {}
    for name, job in jobs.items():
        proxy.off()
        before = proxy.refused
        worker = threading.Thread(target=lambda: results.update({name: job()}))
        worker.start()
        proxy.wait_refused(before + 2, timeout_s=60, alive=worker.is_alive)
        proxy.on()
        worker.join(timeout=120)
        assert name in results, f"the {name} did not ride out the outage"
    assert results["corpus read"] == expected
    assert results["checkpoint upload"] == f"s3://{s3_bucket}/run/checkpoint_x"
    with checkpoint.opened(results["checkpoint upload"]) as d:
        assert checkpoint.load_meta(d)["epoch"] == 1


def test_bad_retry_settings_are_one_line_errors(monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "many")
    with pytest.raises(UserError, match="AWS_MAX_ATTEMPTS='many'"):
        storage.for_ray("s3://bucket/x")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AWS_RETRY_MODE", "eager")
    with pytest.raises(UserError, match="AWS_RETRY_MODE='eager' is unknown"):
        storage.for_ray("s3://bucket/x")


# --- damaged checkpoints on resume and on a worker restart (the suite's Ray) ------------------------

def registered(run_uri: str) -> tuple[list[str], str | None]:
    """Names of the checkpoints Ray Train has registered for a run, oldest first, and its latest one."""
    try:
        snapshot = json.loads(storage.read_bytes(storage.join(run_uri, SNAPSHOT)))
    except (UserError, ValueError):
        return [], None
    latest = snapshot.get("latest_checkpoint_result")
    return (sorted(r["checkpoint_dir_name"] for r in snapshot["checkpoint_results"]),
            latest and latest["checkpoint_dir_name"])


def epochs(hist: list[dict]) -> list[int]:
    return [h["epoch"] for h in hist]


@pytest.mark.integration
def test_a_restarted_worker_and_a_resume_skip_damaged_checkpoints(tiny_corpus, tmp_path, ray_session, capfd):
    from ray.util.state import list_actors

    from asciiray.train import vae

    # Every checkpoint is kept (the restart trains some epochs again), so the latest ones are the newest.
    n = 6
    cfg = config(tmp_path, tiny_corpus, n_epochs=n, batch_size=4, max_failures=1, keep_checkpoints=3 * n)
    run = tmp_path / "runs" / "t"
    outcome: dict = {}
    trainer = threading.Thread(target=lambda: outcome.update(result=vae.train(cfg)))
    trainer.start()
    wait_until(lambda: len(registered(str(run))[0]) >= 2, "two registered checkpoints", 300, alive=trainer.is_alive)
    (worker,) = list_actors(address=ray_session.get_runtime_context().gcs_address,
                            filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    # Frozen, the worker can write and report nothing more: every checkpoint but the oldest Ray knows of
    # is damaged, whichever of them Ray offers the restarted worker.
    os.kill(worker.pid, signal.SIGSTOP)
    oldest = registered(str(run))[0][0]
    kept = checkpoint.verify(run / oldest)["history"]
    for ckpt in run.glob("checkpoint_*"):
        if ckpt.name != oldest and (ckpt / checkpoint.MODEL_FILE).exists():
            flip_byte(ckpt / checkpoint.MODEL_FILE)
    os.kill(worker.pid, signal.SIGKILL)
    trainer.join(timeout=600)

    assert outcome["result"].metrics["epoch"] == n
    hist = history(str(run))
    assert epochs(hist) == list(range(1, n + 1))
    assert json.dumps(hist[:len(kept)]) == json.dumps(kept), "continued from the oldest checkpoint"
    out = capfd.readouterr()
    assert any("is damaged" in line and "skipping it" in line for line in (out.out + out.err).splitlines())

    # The finished run, its latest checkpoint's weights tampered with and the one before's state cut short,
    # resumed for one more epoch: it continues from the third latest.
    names, latest = registered(str(run))
    assert latest == names[-1]
    kept = checkpoint.verify(run / names[-3])["history"]
    lost = checkpoint.load_meta(run / names[-2])["history"]
    assert len(lost) == len(kept) + 1
    DAMAGE["tampered weights"][0](run / names[-1])
    DAMAGE["truncated state"][0](run / names[-2])

    vae.train(replace(cfg, n_epochs=n + 1, resume=True), explicit={"optim.n_epochs", "checkpoint.resume"})
    hist = history(str(run))
    assert epochs(hist) == list(range(1, n + 2))
    assert json.dumps(hist[:len(kept)]) == json.dumps(kept), "continued from the third latest, not from scratch"
    assert json.dumps(hist[len(kept)]) != json.dumps(lost[len(kept)]), "the epoch after it was trained again"
    out = capfd.readouterr()
    warnings = [line for line in (out.out + out.err).splitlines() if "skipping it" in line]
    assert len(warnings) == 2, warnings
    assert f"checkpoint {run / names[-1]} is damaged: model.safetensors" in warnings[0]
    assert f"checkpoint {run / names[-2]} is damaged: state.pt" in warnings[1]


# --- `asciiray train` subprocesses with a Ray of their own: a killed driver, S3 outages --------------

DRIVER_TIMEOUT_S = 600


@pytest.fixture
def own_ray():
    """Environment for `asciiray train` subprocesses that start a local Ray of their own (a fresh
    RAY_TMPDIR, so `ray.init()` finds no other cluster), marked; every marked process is killed after."""
    temp_dir = tempfile.mkdtemp(prefix="arr-", dir="/tmp")  # short: Ray's socket paths have a length limit
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"RAY_TMPDIR": temp_dir, MARKER: marker, "PYTHONUNBUFFERED": "1"})
    yield env
    for pid in marked_pids(MARKER, marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(temp_dir, ignore_errors=True)


class Driver:
    """One `asciiray train` process; its stdout and stderr go to files next to each other."""

    def __init__(self, args: list[str], env: dict[str, str], logs: Path, name: str) -> None:
        self.out, self.err = logs / f"{name}.out", logs / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "asciiray", "train", *args], env=env, cwd=ROOT,
                                         stdout=out, stderr=err)

    def tail(self) -> str:
        return f"stdout:\n{self.out.read_text()[-3000:]}\nstderr:\n{self.err.read_text()[-3000:]}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def wait(self, timeout_s: float = DRIVER_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"asciiray train did not end in {timeout_s} s\n{self.tail()}")


def wait_while_running(condition, driver: Driver, what: str) -> None:
    """Until `condition()` holds, while `driver` runs; its output's tail shows when it did not."""
    wait_until(condition, what, DRIVER_TIMEOUT_S, alive=driver.alive, context=driver.tail)


def assert_every_checkpoint_verifies(run_uri: str) -> None:
    """Each checkpoint with a meta.json verifies; one without (a copy cut short) was never registered by Ray."""
    names, _ = registered(run_uri)
    for uri in checkpoint.checkpoints_in(run_uri):
        if storage.exists(storage.join(uri, checkpoint.META_FILE)):
            with checkpoint.opened(uri):
                pass
        else:
            assert uri.rsplit("/", 1)[-1] not in names, f"Ray registered the incomplete checkpoint {uri}"


def latest_epoch(run_uri: str) -> int:
    """Epoch of the latest checkpoint Ray Train registered: where a resumed run continues (a checkpoint
    written but not yet registered when its driver died is not used: its epoch is trained again)."""
    _, latest = registered(run_uri)
    if latest is None:
        return 0
    with checkpoint.opened(storage.join(run_uri, latest)) as d:
        return checkpoint.load_meta(d)["epoch"]


def resumed_from(driver: Driver) -> list[int]:
    """Epochs of the checkpoints a run's workers said they resumed from."""
    text = driver.out.read_text() + driver.err.read_text()
    return [int(re.search(r"resuming from the checkpoint of epoch (\d+)", line).group(1)) for line in text.splitlines()
            if "resuming from the checkpoint of epoch" in line]


def train_args(corpus: str, storage_path: str, n: int) -> list[str]:
    return ["--preset", "tiny", "--corpus", corpus, "-n", str(n), "-b", "8", "--storage-path", storage_path,
            "--run-name", "r", "--threads", "1", "--font-res", "2", "--image-recon-loss-coeff", "0.1",
            "--keep-checkpoints", str(n)]


@pytest.mark.integration
def test_a_killed_driver_resumes_with_every_epoch_once(tiny_corpus, tmp_path, own_ray):
    n = 4
    args = train_args(tiny_corpus, str(tmp_path / "runs"), n)
    run = str(tmp_path / "runs" / "r")

    first = Driver(args, own_ray, tmp_path, "first")
    wait_while_running(lambda: latest_epoch(run) >= 1, first, "a registered checkpoint")
    first.kill()
    # Its Ray (controller, training worker) is still running when the resume starts: the harder case, where
    # the old controller may still register a checkpoint and the old worker may still be writing one.
    assert marked_pids(MARKER, own_ray[MARKER]), "the killed driver's Ray was gone already"
    committed = latest_epoch(run)
    second = Driver([*args, "--resume"], own_ray, tmp_path, "second")
    assert second.wait() == 0, second.tail()

    assert epochs(history(run)) == list(range(1, n + 1)), "every epoch exactly once"
    assert n > resumed_from(second)[0] >= committed >= 1, second.tail()
    assert_every_checkpoint_verifies(run)


@pytest.mark.integration
def test_an_outage_past_the_retries_stops_a_run_and_its_resume_rides_out_a_short_one(tiny_corpus, tmp_path,
                                                                                      own_ray, outage, s3_bucket):
    n = 6
    corpus = f"s3://{s3_bucket}/corpus"
    storage.copy_dir(tiny_corpus, corpus)
    args = train_args(corpus, f"s3://{s3_bucket}/runs", n)
    run = f"s3://{s3_bucket}/runs/r"
    driver = Driver(args, {**own_ray, "AWS_ENDPOINT_URL": outage.endpoint, "AWS_MAX_ATTEMPTS": "2"}, tmp_path,
                    "run")
    wait_while_running(lambda: latest_epoch(run) >= 1, driver, "a registered checkpoint")
    outage.off()
    assert driver.wait() != 0, driver.tail()
    committed = latest_epoch(run)
    # One line of ours (Ray's controller logs its own traceback of the failed request above it).
    (ours,) = [line for line in driver.err.read_text().splitlines() if line.startswith("asciiray: ")]
    assert ours.startswith("asciiray: training failed: ") and "NETWORK_CONNECTION" in ours, driver.tail()
    assert ours.endswith("--resume continues the run from its last complete checkpoint"), ours
    assert_every_checkpoint_verifies(run)

    # The resume, given more tries, rides out an outage that starts once it has a checkpoint of its own.
    outage.on()
    resumed = Driver([*args, "--resume"], {**own_ray, "AWS_ENDPOINT_URL": outage.endpoint, "AWS_MAX_ATTEMPTS": "6"},
                     tmp_path, "resume")
    wait_while_running(lambda: latest_epoch(run) > committed, resumed, "a registered checkpoint of the resumed run")
    outage.off()
    outage.wait_refused(outage.refused + 2, timeout_s=300, alive=resumed.alive)  # retrying: 4 more tries each
    outage.on()
    assert resumed.wait() == 0, resumed.tail()
    assert epochs(history(run)) == list(range(1, n + 1))
    assert resumed_from(resumed)[0] == committed >= 1, resumed.tail()
    assert_every_checkpoint_verifies(run)
