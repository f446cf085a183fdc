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


def ensure_ray(address: str | None = None) -> None:
    """Connect once per process; later calls are no-ops."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"RAY_TRAIN_V2_ENABLED": "1"}})
    except ConnectionError as exc:
        raise UserError(f"cannot reach Ray at {address}: {exc}; check --address / RAY_ADDRESS") from None
    log.info("Ray ready: %s CPUs, %s GPUs", ray.cluster_resources().get("CPU", 0),
             ray.cluster_resources().get("GPU", 0))
