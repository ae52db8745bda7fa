"""NegCLIP's contrastive loss with hard-negative captions and images (Yuksekgonul et al., ICLR 2023,
https://arxiv.org/abs/2210.01936), exact under data parallelism.

Conventions as in :mod:`tunevl.losses.contrastive` (normalised embeddings, ``logit_scale`` already
exponentiated, at least fp32, gathered with gradient, any per-rank size including 0).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from tunevl.losses.contrastive import _layout, _logits
from tunevl.losses.distributed import gather_sizes, gather_with_grad

__all__ = ["negclip_loss"]


def negclip_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    negative_text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float | None = None,
    *,
    local_loss: bool = False,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """InfoNCE whose image-to-text softmax also runs over hard-negative captions.

    NegCLIP's layout: the image rows are ``[I; I_neg]`` (the batch's images, then the hard-negative
    images, each a near neighbour of one of them) and ``text_embeds`` row ``k`` is the caption of
    image row ``k`` (``[T; T of I_neg]``). The hard captions (word swaps of those captions) only add
    columns: ``L_img = scale * img @ [txt; neg]ᵀ`` (``P x (P + H)``) and ``L_txt = scale * txt @ imgᵀ``
    (``P x P``, hard captions are never queries), and the loss is ``(CE(L_img, y) + CE(L_txt, y)) / 2``
    with ``y`` the matching row, each cross entropy a mean over the ``P`` rows (vinid/neg_clip's
    ``logits_per_image`` against all ``4B`` texts and ``logits_per_text[:2B]``).

    Distributed: the positive pairs and the hard captions are gathered separately (each with its own
    per-rank sizes), so image row ``k`` still matches text row ``k`` after the gather; the global
    layout is ``[all positives' images]`` against ``[all positives' texts; all hard captions]``. The
    value and (after DDP averaging) the gradients equal one process on the concatenated batch,
    whose rows are a permutation of the gathered ones. With ``local_loss`` each rank scores only its
    own rows and returns its share, as :func:`~tunevl.losses.info_nce` does.

    Args:
        image_embeds: ``[p, d]`` L2-normalised image rows of this rank (images, then hard-negative images).
        text_embeds: ``[p, d]`` L2-normalised captions; row ``k`` matches image row ``k``.
        negative_text_embeds: ``[h, d]`` L2-normalised hard-negative captions (``h`` may be 0).
        logit_scale: Multiplier of the cosines (already exponentiated).
        logit_bias: Optional additive logit bias (it cancels in each softmax).
        local_loss: Score only local rows against the gathered columns (O(p * (P + H)) memory).
        group: Process group; the default group when ``None``.

    Returns:
        Scalar loss in at least fp32; 0 (still connected to the graph) for an empty global batch.
    """
    dtype, n, world, sizes, total, offset = _layout(image_embeds, text_embeds, group)
    if negative_text_embeds.ndim != 2 or negative_text_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(f"negative_text_embeds must be [h, {text_embeds.shape[1]}], got {tuple(negative_text_embeds.shape)}")
    neg_sizes = gather_sizes(negative_text_embeds.shape[0], group, negative_text_embeds.device) if world > 1 else None
    all_img = gather_with_grad(image_embeds, group, sizes=sizes).to(dtype)
    all_txt = gather_with_grad(text_embeds, group, sizes=sizes).to(dtype)
    all_neg = gather_with_grad(negative_text_embeds, group, sizes=neg_sizes).to(dtype)
    columns = torch.cat([all_txt, all_neg])
    denom = 2 * max(total, 1)

    if local_loss and world > 1:
        img, txt = image_embeds.to(dtype), text_embeds.to(dtype)
        labels = torch.arange(offset, offset + n, device=img.device)
        loss_sum = F.cross_entropy(_logits(img, columns, logit_scale, logit_bias), labels, reduction="sum")
        loss_sum = loss_sum + F.cross_entropy(_logits(txt, all_img, logit_scale, logit_bias), labels, reduction="sum")
        return loss_sum * world / denom

    labels = torch.arange(total, device=all_img.device)
    loss_sum = F.cross_entropy(_logits(all_img, columns, logit_scale, logit_bias), labels, reduction="sum")
    loss_sum = loss_sum + F.cross_entropy(_logits(all_txt, all_img, logit_scale, logit_bias), labels, reduction="sum")
    return loss_sum / denom
