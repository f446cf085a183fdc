"""Joining or starting Ray: one rule for every command.

`--address` (or RAY_ADDRESS) joins an existing cluster; otherwise a local Ray
starts on the spot, so a laptop run needs no cluster. Inside a Ray job the
job's own cluster is joined the same way.
"""

from __future__ import annotations

import logging
import os

from asciiray.errors import UserError

log = logging.getLogger(__name__)

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


def local_env_vars() -> dict[str, str]:
    """The environment of a local Ray's workers: Train v2, and Ray Data's per-dataset INFO lines off."""
    return {"RAY_TRAIN_V2_ENABLED": "1", "RAY_DATA_LOG_LEVEL": os.environ.get("RAY_DATA_LOG_LEVEL", "WARNING")}


def ensure_ray(address: str | None = None) -> None:
    """Connect once per process; later calls are no-ops."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Ray Data reads this variable once, when first imported (`import ray.train` imports it): the
    # logger gets the level too, for a ray.data imported before now.
    logging.getLogger("ray.data").setLevel(os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING"))
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
