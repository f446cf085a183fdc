"""A shard that fits in memory is read from Ray Data once and reshuffled by the worker (loop.Task)."""

from __future__ import annotations

import torch

from tests.conftest import vae_task


class CountedShard:
    """A Ray Data dataset of code grids in blocks of 7, counting the iterators the loop makes of it."""

    def __init__(self, codes: torch.Tensor) -> None:
        import ray.data

        self.dataset = ray.data.from_items([{"codes": grid} for grid in codes.numpy()]).repartition(
            -(-len(codes) // 7))
        self.iterators = 0

    def iter_batches(self, **options):
        self.iterators += 1
        return self.dataset.iter_batches(**options)


def test_a_kept_shard_is_read_once_and_reshuffled_every_epoch(tmp_path, ray_session):
    task = vae_task(tmp_path)
    assert task.keeps_shards, "the test plan's 64 tiny grids fit in memory"
    codes = torch.arange(30, dtype=torch.uint8).view(30, 1, 1).expand(30, 16, 16).contiguous()
    train, val = CountedShard(codes), CountedShard(codes)
    epochs = [torch.cat([b[:, 0, 0] for b in task._kept_batches("train", train, 8, rank=0)]) for _ in range(3)]
    assert train.iterators == 1
    assert all(sorted(e.tolist()) == list(range(30)) for e in epochs), "every piece once an epoch"
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2]), "a new order each epoch"
    sizes = [len(b) for b in task._kept_batches("train", train, 8, rank=0)]
    assert sizes == [8, 8, 8, 6], "the short last batch is kept on a CPU"
    for _ in range(2):
        assert torch.equal(torch.cat(list(task._kept_batches("val", val, 8, rank=0))), codes)
    assert val.iterators == 1
    again = vae_task(tmp_path)
    first = torch.cat([b[:, 0, 0] for b in again._kept_batches("train", CountedShard(codes), 8, rank=0)])
    assert torch.equal(first, epochs[0]), "the order follows the run's seed and the worker's rank"
