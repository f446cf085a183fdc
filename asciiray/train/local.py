"""The VAE task in one process, without Ray: lr-find's range test and the benchmarks train it on grids in memory."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from asciiray.train.job import Job
from asciiray.train.vae_task import VAETask


class LocalVAETask(VAETask):
    """The VAE task on grids held in this process: endless random batches instead of the run's Ray shards."""

    def __init__(self, job: Job, device: torch.device, grids: torch.Tensor) -> None:
        super().__init__(job, device)
        self.grids = grids

    def shard_codes(self, split: str) -> Iterator[torch.Tensor]:
        size = min(self.cfg.data.batch_size, len(self.grids))
        while True:
            for index in torch.randperm(len(self.grids)).split(size):
                yield self.grids[index].to(self.device)
