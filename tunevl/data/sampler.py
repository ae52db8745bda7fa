"""Deterministic micro-batch order that any rank can rebuild from (seed, position): exact resume, no state."""

from __future__ import annotations

import torch


class MicroBatchStream:
    """The sequence of micro-batches for one rank.

    Micro-batch ``m`` of the run belongs to epoch ``m // per_epoch``; within an epoch the
    records follow a permutation seeded by ``(seed, epoch)``. A global micro-batch holds
    ``per_device * world_size`` records and rank ``r`` takes the ``r``-th contiguous slice,
    so a 1-process run with ``per_device * W`` records sees the same global batches.
    Incomplete trailing batches are dropped (contrastive losses need equal shapes on all ranks).

    Args:
        num_records: Size of the dataset.
        per_device: Records per rank per micro-batch.
        world_size: Number of ranks.
        rank: This rank.
        seed: Seed of the shuffles.
        accumulation: Micro-batches per optimizer step; epochs hold a whole number of steps.
        shuffle: Shuffle each epoch (else dataset order).
    """

    def __init__(self, num_records: int, per_device: int, world_size: int, rank: int, seed: int,
                 accumulation: int = 1, shuffle: bool = True):
        self.n, self.per_device, self.world, self.rank = num_records, per_device, world_size, rank
        self.seed, self.accumulation, self.shuffle = seed, accumulation, shuffle
        global_batch = per_device * world_size
        self.per_epoch = (num_records // global_batch) // accumulation * accumulation
        if self.per_epoch == 0:
            raise ValueError(
                f"{num_records} records cannot fill one optimizer step of {global_batch * accumulation} "
                f"({per_device} per device x {world_size} processes x {accumulation} accumulation)"
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.per_epoch // self.accumulation

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def iterate(self, start: int, stop: int):
        """Yield ``(micro_batch, indices)`` for micro-batches in ``[start, stop)``."""
        cached_epoch, order = None, None
        for m in range(start, stop):
            epoch, within = divmod(m, self.per_epoch)
            if epoch != cached_epoch:
                cached_epoch, order = epoch, self._order(epoch)
            begin = within * self.per_device * self.world + self.rank * self.per_device
            yield m, order[begin : begin + self.per_device].tolist()
