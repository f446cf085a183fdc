"""`asciiray submit` and `asciiray jobs`: run training on a Ray cluster through its job server."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shlex
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING

from asciiray import config
from asciiray.errors import UserError

if TYPE_CHECKING:
    from ray.job_submission import JobStatus, JobSubmissionClient

SUBMIT_EXAMPLES = """examples:
  asciiray submit --follow -- asciiray train --preset seed --use-gpu --num-workers 2 \\
      --storage-path s3://my-bucket/runs --run-name cats
  RAY_ADDRESS=http://127.0.0.1:8265 asciiray submit -- asciiray tune tune/SPEC.yaml
  asciiray jobs logs raysubmit_XXXX --follow

The address is --address, else RAY_ADDRESS, else http://127.0.0.1:8265. A cloud
cluster's job server is reached through a tunnel: `ray dashboard ray_cluster.yaml`
or `kubectl port-forward`. Token clusters need RAY_AUTH_TOKEN (or
RAY_AUTH_TOKEN_PATH). See cluster/README.md.
"""
WAIT_FOR_START_S = 600.0


def _quiet_ray_sdk() -> None:
    """Ray's job SDK logs each upload step and websocket close at INFO; the job's output is what matters."""
    import ray.job_submission  # noqa: F401  (its import sets the SDK loggers' levels, which we override)

    for name in ("ray.dashboard.modules.job.sdk", "ray.dashboard.modules.dashboard_sdk",
                 "ray._private.runtime_env.packaging"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Its only warning says .git and .venv stay behind, which is what we want.
    logging.getLogger("ray._private.runtime_env.working_dir").setLevel(logging.ERROR)


def _address_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--address", help="Ray job server, e.g. http://127.0.0.1:8265 "
                                           "(default: RAY_ADDRESS, else http://127.0.0.1:8265)")
    return parent


def register(sub: argparse._SubParsersAction) -> None:
    address = _address_parent()
    s = sub.add_parser("submit", parents=[address], help="run an asciiray command as a job on a Ray cluster",
                       description="Submit `asciiray train|train-renderer|tune ...` (everything after `--`) "
                                   "to a Ray cluster's job server, with this checkout as the job's working "
                                   "directory and the S3 settings of this shell passed through.",
                       epilog=SUBMIT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--follow", action="store_true",
                      help="stream the job's logs until it ends; exit non-zero unless it succeeded")
    mode.add_argument("--no-wait", action="store_true",
                      help="return right after submitting (default: wait until the job has started)")
    s.add_argument("--runtime-env", metavar="FILE",
                   help="YAML runtime_env merged under the job's own (default: cluster/runtime_env.yaml "
                        "of this checkout, when there is one)")
    s.add_argument("--pass-env", action=argparse.BooleanOptionalAction, default=True,
                   help="pass this shell's AWS_* S3 settings and RAY_AUTH_MODE to the job (turn off on "
                        "clusters that get S3 access from an instance profile or service account; default: on)")
    s.add_argument("command", nargs=argparse.REMAINDER, metavar="-- asciiray COMMAND ...",
                   help="the job's command line: asciiray train|train-renderer|tune ...")
    s.set_defaults(func=run_submit)

    j = sub.add_parser("jobs", help="list, inspect, follow and stop jobs on a Ray cluster",
                       description="Jobs on a Ray cluster's job server (the address as for `asciiray submit`).")
    jsub = j.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    jsub.add_parser("list", parents=[address], help="every job, oldest first").set_defaults(func=run_list)
    for name, func, text in (("status", run_status, "a job's status and message"),
                             ("logs", run_logs, "a job's output"),
                             ("stop", run_stop, "stop a running job")):
        p = jsub.add_parser(name, parents=[address], help=text)
        p.add_argument("job_id", help="the id `asciiray submit` printed (raysubmit_...)")
        if name == "logs":
            p.add_argument("--follow", action="store_true", help="keep streaming until the job ends")
        p.set_defaults(func=func)


def _base_runtime_env(path: str | None) -> dict:
    from asciiray import jobs

    if path is None:
        root = jobs.project_root()
        default = root / "cluster" / "runtime_env.yaml" if root else None
        return config.read_file(default) if default and default.is_file() else {}
    return config.read_file(path)


def validate_command(argv: list[str]) -> list[str]:
    """Check a job's command line with our own parser, so a typo fails here, not on the cluster."""
    from asciiray.cli import build_parser
    from asciiray.jobs import JOB_COMMANDS

    if len(argv) < 2 or argv[0] != "asciiray" or argv[1] not in JOB_COMMANDS:
        raise UserError(f"the job command must be `asciiray {'|'.join(JOB_COMMANDS)} ...` after `--`, "
                        f"got `{shlex.join(argv) or '(nothing)'}`")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        if exc.code == 0:
            raise UserError("the job command asks for help: run `asciiray "
                            f"{argv[1]} --help` here instead") from None
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        reason = lines[-1].split("error: ", 1)[-1] if lines else "invalid arguments"
        raise UserError(f"the job command `{shlex.join(argv)}` is invalid: {reason}") from None
    return argv


def run_submit(args: argparse.Namespace) -> int:
    from asciiray import jobs

    _quiet_ray_sdk()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    validate_command(command)
    base = _base_runtime_env(args.runtime_env)
    job_client = jobs.client(args.address)
    job_id = jobs.submit(job_client, command, working_dir=jobs.project_root(),
                         env_passthrough=jobs.ENV_PASSTHROUGH if args.pass_env else (), base_runtime_env=base)
    print(f"submitted job {job_id}")
    print(f"dashboard: {jobs.dashboard_link(job_client, job_id)}")
    if args.follow:
        final = jobs.follow(job_client, job_id, sys.stdout)
        return _report_end(job_client, job_id, final)
    if not args.no_wait:
        state = _wait_started(job_client, job_id)
        if state.is_terminal():
            return _report_end(job_client, job_id, state)
        print(f"job {job_id} is {state}")
    address = f" --address {args.address}" if args.address else ""
    print(f"follow it: asciiray jobs logs {job_id} --follow{address}")
    return 0


def _wait_started(job_client: JobSubmissionClient, job_id: str) -> JobStatus:
    """Wait until the job left PENDING (runtime env set up, entrypoint launched), bounded."""
    from asciiray import jobs
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + WAIT_FOR_START_S
    details = jobs.status(job_client, job_id)
    while details.status == JobStatus.PENDING and time.monotonic() < deadline:
        time.sleep(1.0)
        details = jobs.status(job_client, job_id)
    return details.status


def _report_end(job_client: JobSubmissionClient, job_id: str, final: JobStatus) -> int:
    from asciiray import jobs
    from ray.job_submission import JobStatus

    details = jobs.status(job_client, job_id)
    message = f": {details.message.strip().splitlines()[-1]}" if details.message and details.message.strip() else ""
    print(f"job {job_id} {final}{message}", file=sys.stdout if final == JobStatus.SUCCEEDED else sys.stderr)
    return 0 if final == JobStatus.SUCCEEDED else 1


def _when(ts_ms: int | None) -> str:
    return datetime.fromtimestamp(ts_ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ts_ms else "-"


def run_list(args: argparse.Namespace) -> int:
    from asciiray import jobs

    job_client = jobs.client(args.address)
    rows = jobs.list_jobs(job_client)
    if not rows:
        print("no jobs")
        return 0
    print(f"{'JOB ID':<30} {'STATUS':<10} {'STARTED':<19}  ENTRYPOINT")
    for job in rows:
        print(f"{job.submission_id or job.job_id or '-':<30} {job.status:<10} {_when(job.start_time):<19}  "
              f"{job.entrypoint}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from asciiray import jobs

    details = jobs.status(jobs.client(args.address), args.job_id)
    print(f"{args.job_id}: {details.status}")
    if details.message:
        print(details.message.strip())
    print(f"entrypoint: {details.entrypoint}")
    print(f"started: {_when(details.start_time)}  ended: {_when(details.end_time)}")
    return 0


def run_logs(args: argparse.Namespace) -> int:
    from asciiray import jobs

    _quiet_ray_sdk()
    job_client = jobs.client(args.address)
    if args.follow:
        final = jobs.follow(job_client, args.job_id, sys.stdout)
        return _report_end(job_client, args.job_id, final)
    sys.stdout.write(jobs.logs(job_client, args.job_id))
    return 0


def run_stop(args: argparse.Namespace) -> int:
    from asciiray import jobs

    final = jobs.stop(jobs.client(args.address), args.job_id)
    if not final.is_terminal():
        raise UserError(f"job {args.job_id} is still {final} after the stop request; check it with "
                        f"`asciiray jobs status {args.job_id}`")
    print(f"job {args.job_id} {final}")
    return 0
