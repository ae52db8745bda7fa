"""Token log-probabilities from hidden states without materialising ``[B, T, V]`` logits, and the
losses built on them (next-token cross entropy, DPO).

The language-model head is called on chunks of the valid (label != -100) positions only; each chunk
runs under activation checkpointing, so forward and backward each hold the logits of one chunk at a
time (``chunk_size x V``) instead of the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.utils.checkpoint import checkpoint

from tunevl.losses.distributed import world_info

__all__ = ["IGNORE_INDEX", "sequence_token_counts", "sequence_logps", "next_token_loss"]

IGNORE_INDEX = -100

LMHead = Callable[[torch.Tensor], torch.Tensor]


def sequence_token_counts(labels: torch.Tensor) -> torch.Tensor:
    """Number of scored tokens per sequence: labels ``[B, T]`` (input-aligned, -100 ignored) -> ``[B]``.

    Position 0 is never scored, since no position predicts it.
    """
    return (labels[:, 1:] != IGNORE_INDEX).sum(dim=1)


def _chunk_logps(lm_head: LMHead, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = lm_head(hidden)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _partitioned(lm_head) -> bool:
    params = lm_head.parameters() if hasattr(lm_head, "parameters") else ()
    return any(hasattr(p, "ds_id") for p in params)


def _chunk_count(n_rows: int, chunk_size: int, device: torch.device, sync: bool | None, group, lm_head) -> int:
    count = max(1, math.ceil(n_rows / chunk_size))
    if sync is None:  # only ZeRO-3 gathers the head's weights collectively on each call
        sync = _partitioned(lm_head)
    if sync and world_info(group)[1] > 1:
        t = torch.tensor([count], dtype=torch.long, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
        count = int(t.item())
    return count


def _token_logps(
    hidden_states: torch.Tensor,
    lm_head: LMHead,
    labels: torch.Tensor,
    chunk_size: int,
    sync_chunk_count: bool | None,
    group,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the valid next tokens, ``[M]`` in row-major order, and their sequence index ``[M]``."""
    if hidden_states.ndim != 3 or labels.shape != hidden_states.shape[:2]:
        raise ValueError(
            f"expected hidden_states [B, T, H] and labels [B, T], got {tuple(hidden_states.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    targets = labels[:, 1:]
    valid = targets != IGNORE_INDEX
    hidden = hidden_states[:, :-1][valid]  # [M, H]: position t predicts labels[t + 1]
    targets = targets[valid]
    seq_index = valid.nonzero()[:, 0]
    # At least one call (possibly on 0 rows) keeps lm_head in the graph, and the count is made equal
    # across ranks: ZeRO-3 all-gathers the head's weights on every call (forward and recompute).
    n_chunks = _chunk_count(hidden.shape[0], chunk_size, hidden.device, sync_chunk_count, group, lm_head)
    pieces = []
    for k in range(n_chunks):
        rows = slice(k * chunk_size, (k + 1) * chunk_size)
        if torch.is_grad_enabled():
            piece = checkpoint(_chunk_logps, lm_head, hidden[rows], targets[rows], use_reentrant=False)
        else:
            piece = _chunk_logps(lm_head, hidden[rows], targets[rows])
        pieces.append(piece)
    return torch.cat(pieces), seq_index


def sequence_logps(
    hidden_states: torch.Tensor,
    lm_head: LMHead,
    labels: torch.Tensor,
    chunk_size: int = 1024,
    *,
    sync_chunk_count: bool | None = None,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Summed log-probability of each sequence's labelled tokens.

    ``sum_t log p(labels[b, t+1] | hidden_states[b, t])`` over positions whose next label is not
    -100, with ``p = softmax(lm_head(hidden))`` computed in at least fp32. Only valid positions are
    scored, ``chunk_size`` rows per ``lm_head`` call, each call checkpointed (recomputed in backward).

    Args:
        hidden_states: ``[B, T, H]`` final hidden states (after the last norm).
        lm_head: The output-embedding module or any callable ``[*, H] -> [*, V]`` (so ZeRO-3
            gathering, peft wrappers and logit soft-capping apply); called on ``[rows, H]``.
        labels: ``[B, T]`` token ids aligned with the input positions, -100 where not scored; the
            shift by one happens inside.
        chunk_size: Rows per ``lm_head`` call; peak logits memory is ``chunk_size x V``.
        sync_chunk_count: Under an initialised process group with more than one rank, all-reduce
            the number of ``lm_head`` calls so every rank makes the same number (ZeRO-3 gathers the
            head's weights collectively on each call). This is a collective: every rank must call
            the function, else pass ``False``. ``None`` (default): only when the head's parameters
            are ZeRO-3-partitioned (elsewhere the count needs no agreement, and the all-reduce
            would cost a host synchronisation per call).
        group: Process group for that synchronisation.

    Returns:
        ``[B]`` summed log-probs (0 for a sequence with no labelled tokens).
    """
    logps, seq_index = _token_logps(hidden_states, lm_head, labels, chunk_size, sync_chunk_count, group)
    out = logps.new_zeros(hidden_states.shape[0])
    return out.index_add(0, seq_index, logps)


def next_token_loss(
    hidden_states: torch.Tensor,
    lm_head: LMHead,
    labels: torch.Tensor,
    chunk_size: int = 1024,
    *,
    num_items_in_batch: int | torch.Tensor | None = None,
    sync_chunk_count: bool | None = None,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Mean next-token cross entropy over labelled tokens, through the chunked path of :func:`sequence_logps`.

    Equals ``F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)``.

    Args:
        hidden_states, lm_head, labels, chunk_size, sync_chunk_count, group: As in :func:`sequence_logps`.
        num_items_in_batch: Divide the summed loss by this instead of the local token count (e.g.
            the token count over all ranks and accumulation steps, as ``transformers`` names it).

    Returns:
        Scalar loss; 0 (still connected to the graph) when no token is labelled.
    """
    logps, _ = _token_logps(hidden_states, lm_head, labels, chunk_size, sync_chunk_count, group)
    denom = num_items_in_batch if num_items_in_batch is not None else max(logps.shape[0], 1)
    return -logps.sum() / denom
