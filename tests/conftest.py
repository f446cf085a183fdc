"""Shared fixtures and helpers: one real S3 server (moto server mode) and one local Ray per session, the
tiny corpora the training tests build, and real multi-node Ray clusters of `ray start` processes on loopback.

The S3 server starts first and its address goes into the standard AWS
variables, so Ray's workers (started afterwards) inherit them and reach the
same loopback endpoint, exactly as they would reach AWS or MinIO.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

T = TypeVar("T")

# Tests that use any of these fixtures start Ray, a cluster or an S3 server: they are integration tests.
INTEGRATION_FIXTURES = frozenset({"ray_session", "s3_server", "s3_bucket", "cluster"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a real service, so `-m "not integration"` is the fast unit subset."""
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def make_pieces(n: int, seed: int = 0) -> list[str]:
    """Distinct small pieces with structure a tiny VAE can learn: framed words and ramps."""
    rng = np.random.default_rng(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = set()
    while len(pieces) < n:
        w = "".join(rng.choice(list(letters), size=rng.integers(3, 9)))
        border = rng.choice(list("#*=+-"))
        line = border * (len(w) + 4)
        pieces.add("\n".join([line, f"{border} {w} {border}", line]))
    return sorted(pieces)


def write_corpus(out, texts: list[str]) -> str:
    """A corpus of `texts` (in three categories) built into the directory `out`; returns its path."""
    from asciiray.corpus import CorpusBuilder

    builder = CorpusBuilder()
    for i, text in enumerate(texts):
        builder.add(text, ["test", str(i % 3)], "files")
    builder.write(str(out))
    return str(out)


def train_config(tmp_path, corpus: str, **kw):
    """A tiny VAE run on `corpus` that 2 CPUs train in seconds, stored under tmp_path/runs/t; `kw` overrides."""
    from asciiray import config as configs
    from asciiray.train.options import TrainConfig

    base = dict(preset="tiny", corpus=corpus, n_epochs=2, batch_size=32, storage_path=str(tmp_path / "runs"),
                run_name="t", cpus_per_worker=0.5, threads=1, font_res=2, image_recon_loss_coeff=0.1)
    return configs.build(TrainConfig, {**base, **kw})


def history(run_dir: str) -> list[dict]:
    """The epochs a run recorded, from its latest checkpoint."""
    from asciiray import checkpoint

    with checkpoint.opened(run_dir) as d:
        return checkpoint.load_meta(d)["history"]


def poll(condition: Callable[[], T], timeout_s: float, interval_s: float = 0.2,
         alive: Callable[[], bool] = lambda: True) -> T | None:
    """The first true value of `condition()`, asked every `interval_s` while `alive()`; None when `alive()`
    turns false or `timeout_s` passes first (for waits whose end is not a failure, such as a grace period)."""
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        if not alive() or time.monotonic() > deadline:
            return None
        time.sleep(interval_s)
    return found


def wait_until(condition: Callable[[], T], what: str, timeout_s: float, interval_s: float = 0.2,
               alive: Callable[[], bool] = lambda: True, context: Callable[[], str] = lambda: "") -> T:
    """The first true value of `condition()`, waiting for it while `alive()` (the process that should bring
    it about runs); the test fails, naming `what` and showing `context()`, when it ends or time is up first.
    Every wait of the suite is for something observable, with a deadline, so a hang is a failure."""
    found = poll(condition, timeout_s, interval_s, alive)
    if found:
        return found
    why = "it ended first" if not alive() else f"not within {timeout_s:.0f} s"
    raise AssertionError(f"waiting for {what}: {why}\n{context()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(env: dict[str, str] | None = None) -> Iterator[str]:
    """A moto S3 server on a free loopback port, its process given `env` on top of ours; its endpoint while open."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    def answers() -> bool:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
        except OSError:
            return False
        return True

    try:
        wait_until(answers, "the moto S3 server to answer", 30, alive=lambda: proc.poll() is None)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server():
    with moto_server() as endpoint:
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        yield endpoint
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh bucket on the loopback S3 server; returns its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_session(s3_server):
    """The one local Ray of the suite (2 CPUs), started after the S3 variables are set.

    Its dashboard runs because Ray Train's controller watches its workers through the state API.
    """
    import ray

    from asciiray.runtime import local_env_vars

    ray.init(num_cpus=2, log_to_driver=True, runtime_env={"env_vars": local_env_vars()})
    yield ray
    ray.shutdown()


# The settings of the learned run (see `learned_run`): 10 epochs of 540 embedded FIGlet pieces of the tiny
# preset, well under a minute on an idle 2-core CPU.
LEARNED_RUN = ["--preset", "tiny", "--max-pieces", "600", "-n", "10", "-b", "16", "--learning-rate", "5e-3",
               "--roll-std", "0", "--image-recon-loss-coeff", "0", "--seed", "0", "--font-res", "2",
               "--cpus-per-worker", "0.5", "--threads", "1"]


@pytest.fixture(scope="session")
def learned_run(ray_session, tmp_path_factory) -> str:
    """One tiny model trained through `asciiray train` on the embedded corpus, for the whole suite: the
    learning test scores it, the art commands use it, --init-from starts from it. Its run directory."""
    from asciiray.cli import main

    runs = tmp_path_factory.mktemp("learned")
    assert main(["train", *LEARNED_RUN, "--storage-path", str(runs), "--run-name", "t"]) == 0
    return str(runs / "t")


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> str:
    """240 small pieces and one too wide for the tiny preset's grid."""
    wide = "x" * 40 + "\n" + "y" * 40 + "\nzzz"
    return write_corpus(tmp_path_factory.mktemp("corpus") / "tiny", [*make_pieces(240), wide])


# --- real multi-node Ray clusters made of `ray start` processes on 127.0.0.1 ----------------------------

RAY = Path(sys.executable).parent / "ray"
# Every process of a test cluster carries CLUSTER_MARKER=<cluster id>, and every process of one of its
# nodes NODE_MARKER=<cluster id>-<node index> (a raylet's workers inherit its environment), so a test can
# tear down its own cluster, or make one node vanish, without touching anything else on the machine.
CLUSTER_MARKER = "ASCIIRAY_TEST_CLUSTER"
NODE_MARKER = "ASCIIRAY_TEST_NODE"
# Starts of one node before a test cluster gives up (see RayCluster.start_node).
START_ATTEMPTS = 3
# Ports each node of a cluster needs of its own when every node shares 127.0.0.1.
NODE_PORTS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
              "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")


def marked_pids(name: str, value: str) -> list[int]:
    """Live processes whose environment has name=value (zombies have no readable environment)."""
    needle = f"{name}={value}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def kill_marked(name: str, value: str, timeout_s: float = 30.0) -> int:
    """SIGKILL every process marked name=value, again until none is left (one may be forking as we kill);
    returns how many were killed."""
    killed: set[int] = set()

    def none_left() -> bool:
        pids = marked_pids(name, value)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        return not pids

    wait_until(none_left, f"no process marked {name}={value} after SIGKILL", timeout_s,
               context=lambda: f"left: {marked_pids(name, value)}")
    return len(killed)


def unique_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def http_json(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@dataclass
class RayCluster:
    """A running test cluster: its addresses, token and `ray start --block` sessions (node 0 is the head)."""

    gcs: str
    dashboard: str
    token: str
    marker: str
    temp_dir: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def driver_env(self) -> dict[str, str]:
        """This process's environment, Ray's variables replaced by the cluster's token auth."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token})
        return env

    def alive_nodes(self) -> int:
        nodes = http_json(f"{self.dashboard}/api/v0/nodes", self.token)["data"]["result"]["result"]
        return sum(n["state"] == "ALIVE" for n in nodes)

    def _alive_or_none(self) -> int | None:
        try:
            return self.alive_nodes()
        except (OSError, KeyError, ValueError):
            return None

    def start_node(self, index: int, command: list[str], env: dict[str, str], timeout_s: float = 180.0) -> None:
        """Start node `index` and wait until it is alive. On a machine shared with busy processes a start can
        fail: the raylet exits when its dashboard agent takes over 15 s to start (ray-project/ray#65983) and
        `ray start` gives the node 30 s to register, both fixed in Ray. A node whose start fails is cleared
        away by its marker and started again, up to START_ATTEMPTS times."""
        log_path = Path(self.temp_dir, f"start-{index}.log")
        for _ in range(START_ATTEMPTS):
            with open(log_path, "w") as log:
                proc = subprocess.Popen(command, env={**env, NODE_MARKER: f"{self.marker}-{index}"}, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            started = time.monotonic()
            if poll(lambda: self._alive_or_none() == len(self.procs) + 1, timeout_s, 0.5,
                    alive=lambda: proc.poll() is None):
                self.procs.append(proc)
                return
            if proc.poll() is None:
                break
            kill_marked(NODE_MARKER, f"{self.marker}-{index}")
            # A raylet of the failed start that registered late: until the GCS sees it dead.
            poll(lambda: self._alive_or_none() in (len(self.procs), None),
                 timeout_s - (time.monotonic() - started), 0.5)
        self.procs.append(proc)
        raise RuntimeError(f"node {index} of the test Ray cluster did not start:\n{log_path.read_text()[-3000:]}")

    def kill_node(self, index: int) -> int:
        """Make node `index` vanish as a lost machine would: SIGKILL every one of its processes."""
        return kill_marked(NODE_MARKER, f"{self.marker}-{index}")

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the `ray start --block` sessions, then SIGKILL whatever of this cluster is left (nothing of
        a test cluster needs keeping, so the grace is short)."""
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        poll(lambda: not marked_pids(CLUSTER_MARKER, self.marker), grace_s, 0.5)
        kill_marked(CLUSTER_MARKER, self.marker)
        for proc in self.procs:
            proc.wait(timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def ray_cluster(nodes: int = 2, cpus_per_node: int = 1, env: dict[str, str] | None = None) -> Iterator[RayCluster]:
    """`nodes` Ray nodes on 127.0.0.1 (`ray start`, token auth, dashboard on loopback), torn down by marker
    even when the test fails; `env` adds variables to every node's processes (e.g. Ray's health checks)."""
    temp_dir = tempfile.mkdtemp(prefix="arc-", dir="/tmp")  # short: Ray's socket paths have a length limit
    token, marker = secrets.token_hex(16), uuid.uuid4().hex
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
    base.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, CLUSTER_MARKER: marker,
                 "PATH": f"{RAY.parent}{os.pathsep}{base.get('PATH', '')}", **(env or {})})
    gcs_port, dashboard_port, client_port, *ports = unique_ports(3 + nodes * len(NODE_PORTS))

    def node_args(index: int) -> list[str]:
        own = ports[index * len(NODE_PORTS):(index + 1) * len(NODE_PORTS)]
        return [arg for name, port in zip(NODE_PORTS, own) for arg in (f"--{name}", str(port))]

    common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus_per_node),
              "--temp-dir", temp_dir, "--disable-usage-stats"]
    head = [str(RAY), "start", "--head", "--port", str(gcs_port), "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dashboard_port), "--include-dashboard", "true",
            "--ray-client-server-port", str(client_port)]
    cluster = RayCluster(gcs=f"127.0.0.1:{gcs_port}", dashboard=f"http://127.0.0.1:{dashboard_port}",
                         token=token, marker=marker, temp_dir=temp_dir)
    try:
        for i in range(nodes):
            cluster.start_node(i, (head if i == 0 else [str(RAY), "start", "--address", cluster.gcs]) + node_args(i)
                               + common, base)
        yield cluster
    finally:
        cluster.stop()


# Helpers of the training-step tests (test_step, test_cadence, test_compile).
SYNCING = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def no_host_sync():
    """Make every tensor-to-host read raise while the block runs."""
    import torch

    saved = {name: getattr(torch.Tensor, name) for name in SYNCING}

    def refuse(name):
        def method(self, *args, **kwargs):
            raise AssertionError(f"host sync: Tensor.{name}")
        return method

    try:
        for name in SYNCING:
            setattr(torch.Tensor, name, refuse(name))
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def vae_task(tmp_path, **kw):
    """A VAETask of the tiny preset on a made-up plan of 64 pieces with flat character counts."""
    import torch

    from asciiray.data import CorpusPlan
    from asciiray.train.job import Job
    from asciiray.train.vae_task import VAETask

    cfg = train_config(tmp_path, "unused", **kw)
    plan = CorpusPlan(uri="unused", rows=64, fitting=64, over_grid=0, train=64, val=0, char_freq=[1.0] * 95)
    return VAETask(Job(kind="vae", cfg=cfg, run_uri="", precision="32", plan=plan), torch.device("cpu"))


def batches(n: int, seed: int = 0) -> list:
    """n random batches of 8 tiny-preset code grids."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 95, (8, 16, 16), dtype=torch.uint8, generator=g) for _ in range(n)]


def make_step(task, seed: int = 0, loss_of=None):
    """The loop's TrainStep for a fresh model of `task` (Adam 1e-3, clip 1, fp32, CPU)."""
    from contextlib import nullcontext

    import torch

    from asciiray.train.step import TrainStep, make_adam

    torch.manual_seed(seed)
    model = task.build_model()
    optimizer = make_adam(list(model.parameters()), 1e-3, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return TrainStep(loss_of or task.step, model, optimizer, scaler, 1.0, nullcontext, torch.device("cpu"))
