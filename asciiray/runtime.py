"""Joining or starting Ray: one rule for every command.

`--address` (or RAY_ADDRESS) joins an existing cluster; otherwise a local Ray
starts on the spot, so a laptop run needs no cluster. Inside a Ray job the
job's own cluster is joined the same way.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from asciiray.errors import UserError

log = logging.getLogger(__name__)

RAY_DATA_LOGGING = str(Path(__file__).with_name("ray_data_logging.yaml"))

# glibc returns big freed buffers to the OS at once, so on a CPU every training step maps and
# page-faults its activations anew. These settings keep freed memory in the heap, and send the
# allocations of Ray Train's training thread to the main arena, whose heap can grow past the 64 MiB
# of a thread arena (benchmarks/cpu_allocator.py, train_throughput.py, docs/PERFORMANCE.md). Given to
# CPU training workers; a variable already set in the environment wins.
CPU_ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296",
                     "MALLOC_ARENA_MAX": "1"}


def cpu_allocator_env() -> dict[str, str]:
    """CPU_ALLOCATOR_ENV, with the values this process's environment already sets."""
    return {k: os.environ.get(k, v) for k, v in CPU_ALLOCATOR_ENV.items()}


# Notices of Ray's that tell an asciiray user nothing they can act on, by the start of their message.
RAY_NOTICES = (
    "Progress bars disabled",  # Ray Data, once per process: asciiray turns them off on purpose
    "Token authentication is enabled for this Ray cluster",  # a local Ray: the token never leaves the machine
)
# The same for Python warnings of Ray's own internals (a -W filter: action:message regex).
RAY_WARNINGS = "ignore:`ExecutionOptions.exclude_resources` is deprecated"  # Ray Train's use of Ray Data


class HideRayNotices(logging.Filter):
    """Drops the records RAY_NOTICES names and keeps every other warning. Ray Data's logging config
    (ray_data_logging.yaml) names this class, so Ray Data's actors use it too."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(RAY_NOTICES)


def local_env_vars() -> dict[str, str]:
    """The environment of a local Ray's processes: Train v2, Ray Data's per-dataset INFO lines and notices
    off, and no preemption watcher (a laptop's Ray has no spot nodes, and the watcher's actor logs an
    error line at every start)."""
    warnings = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), RAY_WARNINGS]))
    return {"RAY_TRAIN_V2_ENABLED": "1", "RAY_DATA_LOG_LEVEL": os.environ.get("RAY_DATA_LOG_LEVEL", "WARNING"),
            "RAY_DATA_LOGGING_CONFIG": os.environ.get("RAY_DATA_LOGGING_CONFIG", RAY_DATA_LOGGING),
            "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0"),
            "PYTHONWARNINGS": warnings}


def quiet_ray_notices() -> None:
    """Hide RAY_NOTICES in this process (the driver), whenever Ray Data was imported."""
    hide = HideRayNotices()
    for name in ("ray.data", "ray._private.authentication.authentication_token_setup"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, HideRayNotices) for f in logger.filters):
            logger.addFilter(hide)
        for handler in logger.handlers:
            if not any(isinstance(f, HideRayNotices) for f in handler.filters):
                handler.addFilter(hide)


def ensure_ray(address: str | None = None) -> None:
    """Connect once per process; later calls are no-ops."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Ray Data reads this variable once, when first imported (`import ray.train` imports it): the
    # logger gets the level too, for a ray.data imported before now.
    logging.getLogger("ray.data").setLevel(os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING"))
    quiet_ray_notices()
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    env = local_env_vars() if address is None else {"RAY_TRAIN_V2_ENABLED": "1"}
    try:
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING, runtime_env={"env_vars": env})
    except ConnectionError as exc:
        raise UserError(f"cannot reach Ray at {address}: {exc}; check --address / RAY_ADDRESS") from None
    log.info("Ray ready: %s CPUs, %s GPUs", ray.cluster_resources().get("CPU", 0),
             ray.cluster_resources().get("GPU", 0))
