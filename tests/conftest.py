"""Shared fixtures and helpers: one real S3 server (moto server mode) and one local Ray per session,
and the tiny corpora the training tests build.

The S3 server starts first and its address goes into the standard AWS
variables, so Ray's workers (started afterwards) inherit them and reach the
same loopback endpoint, exactly as they would reach AWS or MinIO.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import numpy as np
import pytest

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
    from asciiray.train import checkpoint

    with checkpoint.opened(run_dir) as d:
        return checkpoint.load_meta(d)["history"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto S3 server did not start")
            time.sleep(0.2)
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
    proc.terminate()
    proc.wait(timeout=10)


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


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> str:
    """240 small pieces and one too wide for the tiny preset's grid."""
    wide = "x" * 40 + "\n" + "y" * 40 + "\nzzz"
    return write_corpus(tmp_path_factory.mktemp("corpus") / "tiny", [*make_pieces(240), wide])
