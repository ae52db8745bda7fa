"""The counting loss of "Teaching CLIP to Count to Ten" (Paiss et al., ICCV 2023, https://arxiv.org/abs/2302.12066)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunevl.losses.contrastive import _compute_dtype

__all__ = ["counting_loss"]


def counting_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    counterfactual_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
) -> torch.Tensor:
    """Cross entropy of each image between its caption and the caption with a wrong number.

    Row ``i`` holds a counting record: image ``e_i``, its caption ``e_t`` and the counterfactual
    ``e_cf`` (the same caption with the number swapped). The loss of the row is
    ``CE(logit_scale * [e_i . e_t, e_i . e_cf], 0)``, i.e.
    ``-log(exp(s_t) / (exp(s_t) + exp(s_cf)))`` with ``s = logit_scale * cosine``; the function
    returns the mean over rows. Nothing is gathered across ranks: each row only competes with its
    own counterfactual, so a rank's mean over its rows is exact and the training loop's
    normalisation by the step's global count of counting records (``Counting.counts``) makes the
    step's loss the mean over all of them.

    The paper writes the loss without a temperature; OBJECTIVES.md section 3 settles on the model's
    logit scale (without it the two cosines differ by too little for the loss to move).

    Args:
        image_embeds: ``[n, d]`` L2-normalised image embeddings of the counting records.
        text_embeds: ``[n, d]`` L2-normalised embeddings of their captions.
        counterfactual_embeds: ``[n, d]`` L2-normalised embeddings of the counterfactual captions.
        logit_scale: Multiplier of the cosines (already exponentiated), a float or a ``[]``/``[1]`` tensor.

    Returns:
        Scalar loss in at least fp32; 0 (still connected to the graph) when there is no row.
    """
    if not (image_embeds.ndim == 2 and image_embeds.shape == text_embeds.shape == counterfactual_embeds.shape):
        raise ValueError(
            "image_embeds, text_embeds and counterfactual_embeds must all be [n, d] with equal shapes, got "
            f"{tuple(image_embeds.shape)}, {tuple(text_embeds.shape)} and {tuple(counterfactual_embeds.shape)}"
        )
    dtype = _compute_dtype(image_embeds)
    img, txt, cf = image_embeds.to(dtype), text_embeds.to(dtype), counterfactual_embeds.to(dtype)
    with torch.autocast(device_type=img.device.type, enabled=False):  # keep the products in fp32
        logits = logit_scale * torch.stack([(img * txt).sum(-1), (img * cf).sum(-1)], dim=1)  # [n, 2]
    per_row = F.cross_entropy(logits, logits.new_zeros(logits.shape[0], dtype=torch.long), reduction="none")
    return per_row.sum() / max(per_row.shape[0], 1)
