"""Preference losses on summed sequence log-probs (see :func:`tunevl.losses.sequence_logps`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

#: The six conditioned log-probs of S-VCO, keyed ``<response>_with_<image>`` / ``<response>_without_image``.
SVCO_KEYS: tuple[str, ...] = (
    "chosen_with_chosen_image", "chosen_with_rejected_image", "chosen_without_image",
    "rejected_with_rejected_image", "rejected_with_chosen_image", "rejected_without_image",
)
#: The four S-VCO terms, in the order of their betas.
SVCO_TERMS: tuple[str, ...] = ("attend_chosen", "reject_chosen", "attend_rejected", "reject_rejected")


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


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
    margin = _float(margin)
    return -F.logsigmoid(beta * margin).sum() / max(margin.numel(), 1)


def svco_betas(beta: float | Sequence[float]) -> tuple[float, float, float, float]:
    """One beta for every S-VCO term, or four in :data:`SVCO_TERMS` order; each >= 0."""
    betas = (float(beta),) * 4 if isinstance(beta, (int, float)) else tuple(float(b) for b in beta)
    if len(betas) != 4 or any(not b >= 0 for b in betas):
        raise ValueError(f"beta must be one number >= 0 or four (attend-chosen, reject-chosen, attend-rejected, "
                         f"reject-rejected), got {beta!r}")
    return betas  # type: ignore[return-value]


def svco_terms(
    policy: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], beta: float | Sequence[float] = 0.1
) -> dict[str, torch.Tensor]:
    """The four per-pair S-VCO losses ``[B]`` of :func:`svco_loss`, keyed by :data:`SVCO_TERMS` (0 where beta is 0)."""
    betas = svco_betas(beta)
    missing = [k for k in SVCO_KEYS if k not in policy or k not in reference]
    if missing:
        raise KeyError(f"svco_loss needs log-probs for {', '.join(missing)} in both policy and reference")
    r = {k: _float(policy[k] - reference[k]) for k in SVCO_KEYS}  # implicit rewards: policy - reference
    margins = (
        r["chosen_with_chosen_image"] - r["chosen_without_image"],       # attend to the matching image
        r["chosen_without_image"] - r["chosen_with_rejected_image"],     # reject the contradicting one
        r["rejected_with_rejected_image"] - r["rejected_without_image"],  # the same, roles swapped
        r["rejected_without_image"] - r["rejected_with_chosen_image"],
    )
    # A zero beta switches its term off (official code: the term is skipped), keeping the graph connected.
    return {name: (-F.logsigmoid(b * m) if b > 0 else m * 0) for name, b, m in zip(SVCO_TERMS, betas, margins)}


def svco_loss(
    policy: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], beta: float | Sequence[float] = 0.1
) -> torch.Tensor:
    """Symmetrical Visual Contrastive Optimization loss (Wu et al. 2025, https://arxiv.org/abs/2502.13928), mean over pairs.

    ``policy`` and ``reference`` map the six keys of :data:`SVCO_KEYS` to per-sequence summed
    log-probs ``[B]``. With ``r(y|c) = policy - reference``, image ``I_w`` matching response
    ``y_w`` and ``I_l`` matching ``y_l`` (MVC's "chosen" and "rejected": both are correct pairs
    that differ minimally), and no image as the intermediate reference::

        L = mean_B( -logsig(b1 [r(y_w|I_w) - r(y_w|0)]) - logsig(b2 [r(y_w|0) - r(y_w|I_l)])
                    -logsig(b3 [r(y_l|I_l) - r(y_l|0)]) - logsig(b4 [r(y_l|0) - r(y_l|I_w)]) )

    as in the official ``SVCOTrainerForLlava.dpo_loss`` (s-vco/s-vco@bc8f941).

    Args:
        policy, reference: The six log-probs each; the reference should carry no gradient.
        beta: One number for all four terms, or four (attend-chosen, reject-chosen,
            attend-rejected, reject-rejected); a zero switches its term off.

    Returns:
        Scalar loss in at least fp32; 0 (still connected to the graph) for an empty batch.
    """
    terms = svco_terms(policy, reference, beta)
    total = sum(terms.values())
    return total.sum() / max(total.numel(), 1)
