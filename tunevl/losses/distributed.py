"""Cross-rank helpers shared by the losses: rank/world lookup and an all-gather that keeps gradients.

Every function here is a no-op (returns its input) when ``torch.distributed`` is not initialised
or the group has a single rank, so the losses run unchanged on one process.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

__all__ = ["world_info", "gather_sizes", "gather_with_grad"]


def world_info(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """Returns ``(rank, world_size)`` in ``group``, or ``(0, 1)`` without an initialised process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def gather_sizes(
    n: int, group: dist.ProcessGroup | None = None, device: torch.device | str = "cpu"
) -> list[int]:
    """All-gathers one integer per rank (typically a local batch size), in rank order.

    Args:
        n: This rank's value.
        group: Process group; the default group when ``None``.
        device: Device of the small communication tensor (a CUDA device for NCCL).

    Returns:
        ``[n_0, ..., n_{W-1}]``; ``[n]`` on a single process.
    """
    _, world = world_info(group)
    if world == 1:
        return [int(n)]
    local = torch.tensor([n], dtype=torch.long, device=device)
    out = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(out, local, group=group)
    return [int(t.item()) for t in out]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the incoming gradients over ranks and keeps this
    rank's rows (the adjoint of all-gather). Ranks may hold different numbers of rows, including 0."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: list[int], group):
        rank, world = world_info(group)
        ctx.group, ctx.start, ctx.size = group, sum(sizes[:rank]), sizes[rank]
        max_n = max(sizes)
        send = tensor.contiguous()
        if send.shape[0] < max_n:  # all_gather needs equal shapes: pad, then cut the padding off
            send = torch.cat([send, send.new_zeros((max_n - send.shape[0],) + send.shape[1:])])
        bufs = [torch.empty_like(send) for _ in range(world)]
        dist.all_gather(bufs, send, group=group)
        return torch.cat([buf[:n] for buf, n in zip(bufs, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Each rank holds d(its loss)/d(every gathered row); the gradient of this rank's rows is the
        # sum over ranks. all_reduce (not reduce_scatter) so that gloo and unequal sizes work.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.start : ctx.start + ctx.size], None, None


def gather_with_grad(
    tensor: torch.Tensor,
    group: dist.ProcessGroup | None = None,
    *,
    sizes: Sequence[int] | None = None,
) -> torch.Tensor:
    """Concatenates ``tensor`` from all ranks along dim 0, in rank order, with gradient.

    The backward pass sums each rank's gradient for the gathered rows and returns this rank's
    share, so the gradient of a local tensor is ``sum_r d(loss_r)/d(tensor)``. When each rank's loss
    is a share of one global loss (open_clip's ``local_loss``), DDP's gradient averaging then yields
    the single-process gradient; when every rank computes the whole global loss the local gradient
    is ``world_size`` times the true one, and DDP's division by ``world_size`` restores it.

    Every rank must call this (it is a collective), in forward and in backward.

    Args:
        tensor: Local tensor ``[n_r, ...]``; trailing dims must match across ranks, ``n_r`` may differ.
        group: Process group; the default group when ``None``.
        sizes: Dim-0 sizes of all ranks if already known (from :func:`gather_sizes`), saving one
            collective.

    Returns:
        ``[sum_r n_r, ...]``; ``tensor`` itself on a single process.
    """
    _, world = world_info(group)
    if world == 1:
        return tensor
    if sizes is None:
        sizes = gather_sizes(tensor.shape[0], group, tensor.device)
    return _GatherWithGrad.apply(tensor, list(sizes), group)
