"""Preference losses on summed sequence log-probs (see :func:`tunevl.losses.sequence_logps`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """Sigmoid DPO loss (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290), mean over the batch.

    ``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`` with summed sequence log-probs
    (e.g. from :func:`sequence_logps`); the reference log-probs should carry no gradient.

    Returns:
        Scalar loss in at least fp32; 0 (still connected to the graph) for an empty batch.
    """
    margin = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    margin = margin.to(torch.promote_types(margin.dtype, torch.float32))
    return -F.logsigmoid(beta * margin).sum() / max(margin.numel(), 1)
