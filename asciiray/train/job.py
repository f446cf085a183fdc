"""A training run as its driver hands it to its workers, and the run's files in storage.

The driver (asciiray.train.runner) resolves everything that needs the cluster's
view once (the corpus plan, the precision, the run's location) and passes one
`Job` to every Ray Train worker (asciiray.train.loop), config dataclass and
all. Both sides name the run's files through the constants here, so neither
imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from asciiray import storage
from asciiray.data import CorpusPlan
from asciiray.train.options import RunConfig

# The run's stored config (kind, version, sections): what --resume continues.
RUN_FILE = "asciiray-run.json"
# Written by rank 0 when a run stops itself (e.g. a loss that stays non-finite); read by the driver.
STOP_FILE = "stopped.json"
# Version of RUN_FILE's layout (the sectioned config); a run file of another version is refused on --resume.
RUN_FILE_VERSION = 2


@dataclass(frozen=True)
class Job:
    """Everything a worker needs: the validated config and the driver's resolved facts."""

    kind: str
    cfg: RunConfig
    run_uri: str
    precision: str
    plan: CorpusPlan


def per_worker_batch(cfg: RunConfig, world: int) -> int:
    """Pieces per batch on each of `world` workers: --batch-size, or for an elastic run the share of a global
    batch of --batch-size x MAX workers, so a resize keeps the global batch (within world - 1 pieces)."""
    if not cfg.resources.elastic:
        return cfg.data.batch_size
    return max(1, cfg.data.batch_size * cfg.resources.workers()[1] // world)


def run_uri(storage_path: str, run_name: str) -> str:
    """The run's directory: a local absolute path or an s3:// URI."""
    return storage.join(storage.resolve(storage_path), run_name)
