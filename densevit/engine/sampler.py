"""Samplers that shard a dataset over processes; the training one can start mid-epoch."""
from __future__ import annotations

from typing import Iterator

from torch.utils.data import DistributedSampler, Sampler


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` (same permutation per ``seed + epoch``) that can skip a prefix.

    ``set_position(epoch, start)`` selects the epoch's permutation and skips this process's
    first ``start`` indices, the ones already consumed before an interruption, so a resumed
    run sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, dataset_len: int, num_replicas: int, rank: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(range(dataset_len), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order, without padding: every sample scored once."""

    def __init__(self, dataset_len: int, num_replicas: int, rank: int) -> None:
        self.indices = list(range(rank, dataset_len, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
