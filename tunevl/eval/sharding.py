"""Evaluation split across ranks: each rank scores its share, every rank receives all the results.

Under ``torch.distributed`` with several ranks, rank ``r`` takes the ``r``-th contiguous share of the
items; every rank makes the same number of forward calls (a rank whose share is shorter repeats an
item and drops the result), because under ZeRO-3 every forward gathers parameters collectively. With
one process everything runs locally. Results are identical to one process up to float reassociation.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.distributed as dist

from tunevl.losses.distributed import world_info


def share(n: int) -> tuple[range, int]:
    """This rank's contiguous share of ``n`` items, and the largest share of any rank."""
    rank, world = world_info()
    size = math.ceil(n / world) if n else 0
    return range(min(rank * size, n), min((rank + 1) * size, n)), size


def batched_calls(indices: range, size: int, batch_size: int) -> list[list[int]]:
    """``indices`` in batches, padded to ``ceil(size / batch_size)`` non-empty calls (repeating the last index,
    or index 0 when the share is empty): equal call counts on every rank."""
    calls = math.ceil(size / batch_size) if size else 0
    items = list(indices)
    filler = items[-1] if items else 0
    out = []
    for k in range(calls):
        chunk = items[k * batch_size:(k + 1) * batch_size]
        out.append(chunk or [filler])
    return out


def gather_rows(local: torch.Tensor, n_local: int, size: int, n: int) -> torch.Tensor:
    """Concatenate every rank's first rows (``n_local`` here, ``size`` at most) in rank order: ``[n, ...]``."""
    _, world = world_info()
    if world == 1:
        return local[:n]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    pad = local.new_zeros((size,) + tuple(local.shape[1:]))
    pad[:n_local] = local[:n_local]
    bufs = [torch.empty_like(pad, device=device) for _ in range(world)]
    dist.all_gather(bufs, pad.to(device))
    sizes = [len(range(min(r * size, n), min((r + 1) * size, n))) for r in range(world)]
    return torch.cat([b[:s] for b, s in zip(bufs, sizes)]).to(local.device)


def gather_objects(local: list) -> list:
    """Concatenate every rank's list, in rank order."""
    _, world = world_info()
    if world == 1:
        return list(local)
    out = [None] * world
    dist.all_gather_object(out, list(local))
    return [x for part in out for x in part]


def shard_map(fn: Callable[[list], torch.Tensor], items: Sequence, batch_size: int) -> torch.Tensor:
    """``torch.cat([fn(batch) for batch in batches of items])``, each rank computing its share."""
    indices, size = share(len(items))
    outputs, kept = [], 0
    for call in batched_calls(indices, size, batch_size):
        out = fn([items[i] for i in call])
        real = [i for i in call if i in indices]
        outputs.append(out[: len(real)] if real else out[:0])
        kept += len(real)
    if not outputs:  # no items anywhere
        return torch.empty(0)
    # A rank with an empty share still ran its calls (on a repeated item), so its rows have the right shape.
    return gather_rows(torch.cat(outputs), kept, size, len(items))
