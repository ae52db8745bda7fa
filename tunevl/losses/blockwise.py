"""Sums over an ``n x N`` logits matrix computed a block of rows at a time, forward and backward.

The contrastive losses reduce ``L = scale * q @ k.T + bias`` to a scalar through row-wise (and, for
CLIP's symmetric loss, column-wise) log-sum-exps or SigLIP's softplus. Holding ``L`` costs
``n x N`` floats (4 GiB in fp32 at N = 32,768) plus as much again for every temporary of the
softmax and its gradient. The autograd function here never holds more than a few ``block x N``
buffers: the forward keeps only per-row and per-column log-sum-exps (the column ones accumulated
online, with a running maximum, as in flash attention), and the backward recomputes each block of
logits from ``q`` and ``k``. That costs one extra matmul per block (four ``block x N x d`` products
instead of the direct path's three) and returns values and gradients equal to the direct
computation up to summation order.
"""

from __future__ import annotations

import torch

__all__ = ["BLOCK_ELEMENTS", "auto_block_size", "pairwise_lse_sum", "pairwise_softplus_sum"]

#: Logits per block when the block size is automatic (64 MiB in fp32); matrices up to this size are
#: computed directly.
BLOCK_ELEMENTS = 1 << 24


def auto_block_size(rows: int, cols: int, block_size: int | None) -> int | None:
    """Rows per block, or None for the direct path.

    Args:
        rows: Rows of the logits matrix.
        cols: Columns of the logits matrix.
        block_size: None: blockwise when ``rows * cols > BLOCK_ELEMENTS``, with
            ``BLOCK_ELEMENTS // cols`` rows per block; 0: always direct; ``k > 0``: blocks of ``k`` rows.
    """
    if block_size is None:
        return max(1, BLOCK_ELEMENTS // max(cols, 1)) if rows * cols > BLOCK_ELEMENTS else None
    if block_size < 0:
        raise ValueError(f"block_size must be None (automatic), 0 (direct) or positive, got {block_size}")
    return block_size or None


def _as_scalar(value, ref: torch.Tensor) -> torch.Tensor:
    """A 0-d tensor in ``ref``'s dtype and device, keeping the graph of a tensor ``value``."""
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise ValueError(f"logit scale and bias must hold one value, got shape {tuple(value.shape)}")
        return value.reshape(()).to(ref.dtype)
    return torch.tensor(float(value), dtype=ref.dtype, device=ref.device)


class _BlockwisePairs(torch.autograd.Function):
    """``sum_i lse_j L_ij`` (+ ``sum_j lse_i L_ij`` when ``cols``), or ``sum_ij softplus(L_ij)``."""

    @staticmethod
    def forward(ctx, q, k, scale, bias, kind: str, block: int):
        n, big_n = q.shape[0], k.shape[0]
        total = q.new_zeros(())
        row_lse = q.new_empty(n) if kind != "softplus" else None
        col_max = col_sum = col_lse = None
        if kind == "lse_rows_cols":
            col_max = q.new_full((big_n,), float("-inf"))
            col_sum = q.new_zeros(big_n)
        for start in range(0, n, block):
            logits = q[start : start + block] @ k.T
            logits.mul_(scale)
            if bias is not None:
                logits.add_(bias)
            if kind == "softplus":
                total += torch.logaddexp(logits, logits.new_zeros(())).sum()
                continue
            lse = torch.logsumexp(logits, dim=1)
            row_lse[start : start + block] = lse
            total += lse.sum()
            if col_max is not None:  # online log-sum-exp over the rows seen so far
                new_max = torch.maximum(col_max, logits.amax(dim=0))
                col_sum = col_sum * torch.exp(col_max - new_max) + torch.exp(logits.sub_(new_max)).sum(dim=0)
                col_max = new_max
        if col_max is not None:
            col_lse = col_max + torch.log(col_sum)
            total += col_lse.sum()
        ctx.kind, ctx.block = kind, block
        ctx.save_for_backward(q, k, scale, bias, row_lse, col_lse)
        return total

    @staticmethod
    def backward(ctx, grad):
        q, k, scale, bias, row_lse, col_lse = ctx.saved_tensors
        need_q, need_k, need_scale, need_bias = ctx.needs_input_grad[:4]
        dq = torch.zeros_like(q) if need_q else None
        dk = torch.zeros_like(k) if need_k else None
        dscale = q.new_zeros(()) if need_scale else None
        dbias = q.new_zeros(()) if need_bias else None
        with torch.autocast(q.device.type, enabled=False):
            for start in range(0, q.shape[0], ctx.block):
                q_blk = q[start : start + ctx.block]
                raw = q_blk @ k.T
                logits = raw * scale
                if bias is not None:
                    logits.add_(bias)
                if ctx.kind == "softplus":  # d softplus(x) / dx = sigmoid(x)
                    g = logits.sigmoid_()
                else:  # d lse / dx = softmax along the reduced dimension
                    g = (logits - row_lse[start : start + ctx.block, None]).exp_()
                    if col_lse is not None:
                        g.add_(logits.sub_(col_lse).exp_())
                    del logits
                g.mul_(grad)
                if dscale is not None:  # sum (not a BLAS dot): pairwise summation keeps fp32 accurate
                    dscale += raw.mul_(g).sum()
                del raw
                if dbias is not None:
                    dbias += g.sum()
                g.mul_(scale)
                if dq is not None:
                    torch.mm(g, k, out=dq[start : start + ctx.block])
                if dk is not None:
                    dk.addmm_(g.T, q_blk)
        dscale = dscale.reshape(scale.shape) if dscale is not None else None
        dbias = dbias.reshape(bias.shape) if dbias is not None else None
        return dq, dk, dscale, dbias, None, None


def _apply(q, k, scale, bias, kind: str, block: int) -> torch.Tensor:
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(f"q and k must be [n, d] and [N, d], got {tuple(q.shape)} and {tuple(k.shape)}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    scale_t = _as_scalar(scale, q)
    bias_t = None if bias is None else _as_scalar(bias, q)
    # Autocast would run the matmuls in bf16/fp16; the losses promise at least fp32 logits.
    with torch.autocast(q.device.type, enabled=False):
        return _BlockwisePairs.apply(q, k, scale_t, bias_t, kind, block)


def pairwise_lse_sum(q, k, scale, bias=None, *, columns: bool = False, block: int) -> torch.Tensor:
    """``sum_i logsumexp_j L_ij`` (plus ``sum_j logsumexp_i L_ij`` when ``columns``) of
    ``L = scale * q @ k.T + bias``, ``block`` rows of ``L`` at a time (forward and backward).

    Args:
        q: ``[n, d]`` rows, in the compute dtype.
        k: ``[N, d]`` columns, same dtype.
        scale: Multiplier of ``q @ k.T``: a float or a one-element tensor.
        bias: Optional additive bias: a float or a one-element tensor.
        columns: Also add the column-wise log-sum-exps (CLIP's text-to-image direction).
        block: Rows per block.

    Returns:
        A 0-d tensor in ``q``'s dtype.
    """
    return _apply(q, k, scale, bias, "lse_rows_cols" if columns else "lse_rows", block)


def pairwise_softplus_sum(q, k, scale, bias=None, *, block: int) -> torch.Tensor:
    """``sum_ij softplus(L_ij)`` of ``L = scale * q @ k.T + bias``, ``block`` rows at a time.

    ``softplus`` is computed as ``logaddexp(x, 0)``, exact for large ``|x|``. Arguments as
    :func:`pairwise_lse_sum`.
    """
    return _apply(q, k, scale, bias, "softplus", block)
