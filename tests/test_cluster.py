"""Cluster deployment: the launcher config, the KubeRay manifest, and job submission
to a real two-node Ray cluster with token authentication, all on loopback.

The cluster is started with `ray start` as separate processes (never the
suite's in-process Ray) and is torn down by process (tests.conftest.ray_cluster),
so nothing else on the machine is touched.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, http_json, ray_cluster, wait_until

ROOT = Path(__file__).resolve().parents[1]
CLI_TIMEOUT_S = 120
TRAIN_TIMEOUT_S = 900


# --- static files ---------------------------------------------------------------------------------

def test_ray_cluster_yaml_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    text = (ROOT / "ray_cluster.yaml").read_text()
    config = yaml.safe_load(text)
    validate_config(prepare_config(config))  # what `ray up` runs before touching AWS

    nodes = config["available_node_types"]
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = [n for name, n in nodes.items() if name != config["head_node_type"]]
    assert len(workers) == 1 and workers[0]["min_workers"] == 0 and workers[0]["max_workers"] >= 1
    assert workers[0]["node_config"]["InstanceType"].startswith(("g", "p"))
    assert all("IamInstanceProfile" in n["node_config"] for n in nodes.values())
    for command in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]:
        assert "RAY_AUTH_MODE=token" in command
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][-1]
    assert "IpPermissions" not in config["provider"].get("security_group", {})
    assert not re.search(r"aws_(access_key_id|secret_access_key)|AKIA[0-9A-Z]{16}", text, re.I)

    broken = dict(config, not_a_launcher_key=1)
    with pytest.raises(Exception, match="not_a_launcher_key"):
        validate_config(prepare_config(broken))


def _rayjob() -> dict:
    docs = [d for d in yaml.safe_load_all((ROOT / "cluster" / "rayjob.yaml").read_text()) if d]
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    return job


def test_rayjob_manifest_parses_and_runs_a_valid_asciiray_command():
    from asciiray.cli import build_parser
    from asciiray.cli.jobs import validate_command

    job = _rayjob()
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["asciiray", "train"]
    args = build_parser().parse_args(argv[1:])
    assert getattr(args, "checkpoint.storage_path").startswith("s3://") and getattr(args, "resources.use_gpu")
    assert validate_command(argv) == argv

    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token" and cluster["authOptions"]["secretName"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (gpu,) = cluster["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1
    (container,) = gpu["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"]
    for spec in (cluster["headGroupSpec"]["template"]["spec"], gpu["template"]["spec"]):
        assert spec["serviceAccountName"] == "asciiray"


def test_runtime_env_file_is_a_valid_runtime_env():
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load((ROOT / "cluster" / "runtime_env.yaml").read_text())
    runtime_env = RuntimeEnv(**env, working_dir=str(ROOT))
    assert runtime_env["working_dir"] == str(ROOT)
    assert {"tests", "benchmarks", "runs"} <= set(runtime_env["excludes"]), "the job uploads only what runs"
    # Ray refuses a job whose runtime_env repeats a variable the driver sets (RAY_TRAIN_V2_ENABLED).
    assert runtime_env["env_vars"] == {"PYTHONUNBUFFERED": "1"}


# --- the job library, without a cluster ----------------------------------------------------------

def test_address_is_the_flag_then_ray_address_then_local(monkeypatch):
    from asciiray import jobs

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert jobs.resolve_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    assert jobs.resolve_address(None) == "http://head:8265"
    assert jobs.resolve_address("http://other:8265") == "http://other:8265"


def test_runtime_env_carries_the_checkout_and_only_the_set_variables(monkeypatch):
    from asciiray import jobs

    for name in jobs.ENV_PASSTHROUGH:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret")
    env = jobs.runtime_env(working_dir=jobs.project_root(), base={"env_vars": {"PYTHONUNBUFFERED": "1"}})
    assert env["working_dir"] == str(ROOT)
    assert env["env_vars"] == {"PYTHONUNBUFFERED": "1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}
    assert "env_vars" not in jobs.runtime_env(working_dir=None, env_passthrough=())


def test_token_comes_from_ray_auth_token_or_its_file(monkeypatch, tmp_path):
    from asciiray import jobs
    from asciiray.errors import UserError

    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert jobs._token_headers() == {}
    (tmp_path / "token").write_text("from-file\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    assert jobs._token_headers() == {"Authorization": "Bearer from-file"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert jobs._token_headers() == {"Authorization": "Bearer from-env"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert jobs._token_headers() == {}
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="RAY_AUTH_TOKEN_PATH"):
        jobs._token_headers()


# --- the CLI, without a cluster --------------------------------------------------------------------

def asciiray(*args: str, token: str | None = None, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run the real CLI with a clean Ray auth environment (and this shell's AWS settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    if token is not None:
        env["RAY_AUTH_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "asciiray", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("asciiray: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unreachable_address_is_a_one_line_error():
    address = f"http://127.0.0.1:{free_port()}"
    result = asciiray("submit", "--address", address, "--", "asciiray", "train", "-n", "1")
    assert_one_line_error(result, "cannot reach", address, "ray start --head")
    assert_one_line_error(asciiray("jobs", "list", "--address", address), address)


def test_submit_accepts_only_valid_asciiray_job_commands(capsys):
    from asciiray.cli import main

    address = f"http://127.0.0.1:{free_port()}"  # never reached: the command is checked first
    for job, needle in ((["python", "x.py"], "asciiray train|train-renderer|tune"),
                        (["asciiray", "corpus", "stats", "x"], "asciiray train|train-renderer|tune"),
                        (["asciiray", "train", "--bogus"], "unrecognized arguments: --bogus")):
        assert main(["submit", "--address", address, "--", *job]) == 2
        assert_one_line_error(subprocess.CompletedProcess([], 2, "", capsys.readouterr().err), needle)


# --- a real two-node cluster with token authentication ---------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    """A head (1 CPU) and a second node (1 CPU) on 127.0.0.1, token auth on; yields (dashboard, token)."""
    with ray_cluster(nodes=2) as c:
        yield c.dashboard, c.token


def _job_count(dashboard: str, token: str) -> int:
    return len(http_json(f"{dashboard}/api/jobs/", token))


def test_submission_without_or_with_a_wrong_token_is_refused(cluster):
    dashboard, token = cluster
    before = _job_count(dashboard, token)
    job = ["--", "asciiray", "train", "-n", "1", "--preset", "tiny"]
    assert_one_line_error(asciiray("submit", "--address", dashboard, *job), "401", "RAY_AUTH_TOKEN")
    assert_one_line_error(asciiray("submit", "--address", dashboard, *job, token="not-the-token"),
                          "403", "RAY_AUTH_TOKEN")
    assert_one_line_error(asciiray("jobs", "list", "--address", dashboard), "401")
    assert _job_count(dashboard, token) == before


def test_jobs_stop_stops_a_running_job(cluster, monkeypatch):
    from ray.job_submission import JobStatus

    from asciiray import jobs

    dashboard, token = cluster
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    client = jobs.client(dashboard)
    job_id = client.submit_job(entrypoint="sleep 600")
    wait_until(lambda: client.get_job_status(job_id) == JobStatus.RUNNING, "the job to run", 120, 0.5,
               context=lambda: str(client.get_job_info(job_id)))

    result = asciiray("jobs", "stop", job_id, "--address", dashboard, token=token)
    assert result.returncode == 0, result.stderr
    assert f"job {job_id} STOPPED" in result.stdout
    assert client.get_job_status(job_id) == JobStatus.STOPPED
    status = asciiray("jobs", "status", job_id, "--address", dashboard, token=token)
    assert status.returncode == 0 and "STOPPED" in status.stdout


def test_tiny_train_job_checkpoints_to_s3(cluster, s3_bucket):
    import boto3

    dashboard, token = cluster
    run = f"s3://{s3_bucket}/runs"
    result = asciiray("submit", "--address", dashboard, "--follow", "--",
                      "asciiray", "train", "--preset", "tiny", "-n", "1", "-b", "16", "--max-pieces", "64",
                      "--num-workers", "1", "--cpus-per-worker", "1",
                      "--storage-path", run, "--run-name", "on-cluster",
                      token=token, timeout=TRAIN_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    job_id = re.search(r"submitted job (\S+)", result.stdout).group(1)
    assert f"{dashboard}/#/jobs/{job_id}" in result.stdout
    assert f"job {job_id} SUCCEEDED" in result.stdout

    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(
        Bucket=s3_bucket, Prefix="runs/on-cluster/").get("Contents", [])]
    assert any(re.match(r"runs/on-cluster/checkpoint_[^/]+/model\.safetensors$", k) for k in keys), keys

    logs = asciiray("jobs", "logs", job_id, "--address", dashboard, token=token)
    assert logs.returncode == 0 and "done: 1 epochs" in logs.stdout and "latest checkpoint: s3://" in logs.stdout
    listing = asciiray("jobs", "list", "--address", dashboard, token=token)
    assert re.search(rf"{job_id}\s+SUCCEEDED\s.*python -m asciiray train", listing.stdout), listing.stdout
