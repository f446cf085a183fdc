"""Ray Jobs: submit asciiray commands to a running cluster and watch them.

A job is one `asciiray train|train-renderer|tune ...` command line, run by the
cluster's job server (the dashboard, port 8265) with this checkout as its
working directory. Talking to the job server is plain HTTP, so it reaches a
cloud cluster through the launcher's port forwarding (`ray dashboard`) or
`kubectl port-forward`, never through an open port.

Token authentication follows Ray's own variables: `RAY_AUTH_TOKEN` (the token)
or `RAY_AUTH_TOKEN_PATH` (a file holding it) is sent as a bearer token;
`RAY_AUTH_MODE=token` alone makes Ray send its default `~/.ray/auth_token`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from asciiray.errors import UserError

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

LOCAL_ADDRESS = "http://127.0.0.1:8265"
JOB_COMMANDS = ("train", "train-renderer", "tune")
# Set variables of these names travel to the job: S3 endpoint, region and
# credentials (so an S3-compatible store or a key pair works on the cluster as
# it does here) and the auth mode. The token itself does not travel: every
# node of a token cluster already holds it, and a runtime_env is readable by
# anyone who can list jobs.
ENV_PASSTHROUGH = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "RAY_AUTH_MODE",
)
TOKEN_HINT = "set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token"


def resolve_address(address: str | None) -> str:
    """The job server to talk to: the flag, else RAY_ADDRESS, else a cluster on this machine."""
    return address or os.environ.get("RAY_ADDRESS") or LOCAL_ADDRESS


def project_root() -> Path | None:
    """The checkout this package runs from (uploaded as the job's working dir), or None if installed."""
    root = Path(__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "asciiray"' in pyproject.read_text():
        return root
    return None


def _token_headers() -> dict[str, str]:
    """An explicit bearer header when the user named a token, whatever RAY_AUTH_MODE says.

    Ray's client sends a token only under RAY_AUTH_MODE=token; a user who set
    just RAY_AUTH_TOKEN means it to be used, so we send it ourselves.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not token and path:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as exc:
            raise UserError(f"RAY_AUTH_TOKEN_PATH={path}: {exc.strerror}; point it at the file holding "
                            "the cluster's token") from None
        if not token:
            raise UserError(f"RAY_AUTH_TOKEN_PATH={path} is empty; point it at the file holding the cluster's token")
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextlib.contextmanager
def _translated(address: str) -> Iterator[None]:
    """Turn the job server's failures into one-line errors that say what to do."""
    import aiohttp
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        if str(exc).startswith("Authentication failed"):
            raise UserError(f"the Ray cluster at {address} rejected the token (403): {TOKEN_HINT}") from None
        raise UserError(f"the Ray cluster at {address} requires a token (401): {TOKEN_HINT}") from None
    except (ConnectionError, requests.exceptions.ConnectionError, aiohttp.ClientConnectionError):
        raise UserError(
            f"cannot reach the Ray job server at {address}: start a cluster with `ray start --head` "
            "or forward the remote dashboard port (`ray dashboard ray_cluster.yaml`, or `kubectl "
            "port-forward` to the head service's port 8265), then pass --address or set RAY_ADDRESS"
        ) from None
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status in (401, 403):
            raise UserError(f"the Ray cluster at {address} refused the token ({exc.status}): {TOKEN_HINT}") from None
        raise UserError(f"the Ray job server at {address} refused to stream logs ({exc.status}): "
                        "check the job id with `asciiray jobs list`") from None
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = re.sub(r"^Request failed with status code \d+: ", "", first)
        raise UserError(f"the Ray job server at {address}: {first}") from None


def client(address: str | None = None) -> JobSubmissionClient:
    """A connected job client; an unreachable server or a refused token is a one-line UserError."""
    from ray.job_submission import JobSubmissionClient

    address = resolve_address(address)
    # Ray lets RAY_ADDRESS / RAY_API_SERVER_ADDRESS override an explicit address;
    # here the flag wins, as it does for every other asciiray command.
    hidden = {k: os.environ.pop(k) for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS") if k in os.environ}
    try:
        with _translated(address):
            return JobSubmissionClient(address, headers=_token_headers())
    finally:
        os.environ.update(hidden)


def runtime_env(*, working_dir: str | Path | None, env_passthrough: tuple[str, ...] | list[str] = ENV_PASSTHROUGH,
                base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The job's runtime_env: `base` (e.g. cluster/runtime_env.yaml), the code, and the set variables."""
    env = dict(base or {})
    if working_dir is not None:
        env["working_dir"] = str(working_dir)
    env_vars = dict(env.get("env_vars") or {})
    env_vars.update({k: os.environ[k] for k in env_passthrough if os.environ.get(k)})
    if env_vars:
        env["env_vars"] = env_vars
    return env


def submit(job_client: JobSubmissionClient, command: list[str], *, working_dir: str | Path | None,
           env_passthrough: tuple[str, ...] | list[str] = ENV_PASSTHROUGH,
           base_runtime_env: dict[str, Any] | None = None) -> str:
    """Submit a validated `asciiray ...` command line; returns the job id.

    The entrypoint is `python -m asciiray ...`, so it runs the uploaded checkout
    even on a cluster whose image lacks the `asciiray` script.
    """
    argv = command
    entrypoint = shlex.join(["python", "-m", *argv])
    env = runtime_env(working_dir=working_dir, env_passthrough=env_passthrough, base=base_runtime_env)
    with _translated(job_client.get_address()):
        return job_client.submit_job(entrypoint=entrypoint, runtime_env=env,
                                     metadata={"asciiray_command": argv[1]})


def dashboard_link(job_client: JobSubmissionClient, job_id: str) -> str:
    """The job's page in the Ray dashboard (through the same address or tunnel)."""
    return f"{job_client.get_address()}/#/jobs/{job_id}"


def follow(job_client: JobSubmissionClient, job_id: str, out: IO[str], poll_s: float = 1.0) -> JobStatus:
    """Stream the job's logs to `out` until it ends; returns its final status."""
    async def tail() -> None:
        async for chunk in job_client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    with _translated(job_client.get_address()):
        asyncio.run(tail())
        status = job_client.get_job_status(job_id)
        while not status.is_terminal():
            time.sleep(poll_s)
            status = job_client.get_job_status(job_id)
    return status


def list_jobs(job_client: JobSubmissionClient) -> list[JobDetails]:
    """Every job the cluster knows, oldest first."""
    with _translated(job_client.get_address()):
        jobs = job_client.list_jobs()
    return sorted(jobs, key=lambda j: j.start_time or 0)


def status(job_client: JobSubmissionClient, job_id: str) -> JobDetails:
    """The job's details (status, message, entrypoint, times)."""
    with _translated(job_client.get_address()):
        return job_client.get_job_info(job_id)


def logs(job_client: JobSubmissionClient, job_id: str) -> str:
    """Everything the job has printed so far."""
    with _translated(job_client.get_address()):
        return job_client.get_job_logs(job_id)


def stop(job_client: JobSubmissionClient, job_id: str, wait_s: float = 30.0, poll_s: float = 0.5) -> JobStatus:
    """Ask the job to stop and wait (bounded) until it has; returns its status."""
    with _translated(job_client.get_address()):
        job_client.stop_job(job_id)
        deadline = time.monotonic() + wait_s
        current = job_client.get_job_status(job_id)
        while not current.is_terminal() and time.monotonic() < deadline:
            time.sleep(poll_s)
            current = job_client.get_job_status(job_id)
    return current
