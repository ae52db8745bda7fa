"""Classification over class prompts (CoOp, https://arxiv.org/abs/2109.01134): images against one text
embedding per class, scaled by the dual encoder's logit scale (and bias).

Embeddings are L2-normalised by the caller; ``logit_scale`` is the multiplier (already exponentiated).
The loss is a mean over this call's images; it needs nothing from other ranks (each image is scored
against every class), so with the usual data-parallel averaging of gradients it is exact.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["class_logits", "classification_loss"]


def class_logits(image_embeds: torch.Tensor, class_embeds: torch.Tensor, logit_scale, logit_bias=None) -> torch.Tensor:
    """``[B, C]`` logits ``scale * cos(image, class) + bias``, in fp32 (also under autocast).

    Args:
        image_embeds: ``[B, D]`` unit image embeddings.
        class_embeds: ``[C, D]`` unit class embeddings, or ``[B, C, D]`` when every image has its own
            (CoCoOp's image-conditioned prompts).
        logit_scale: The multiplier (a float or a tensor of shape ``[]`` / ``[1]``).
        logit_bias: Added to every logit (SigLIP), or None.
    """
    if image_embeds.ndim != 2 or class_embeds.ndim not in (2, 3) or class_embeds.shape[-1] != image_embeds.shape[-1]:
        raise ValueError(f"expected image_embeds [B, D] and class_embeds [C, D] or [B, C, D], got "
                         f"{tuple(image_embeds.shape)} and {tuple(class_embeds.shape)}")
    with torch.autocast(device_type=image_embeds.device.type, enabled=False):
        image, classes = image_embeds.float(), class_embeds.float()
        cos = image @ classes.T if classes.ndim == 2 else torch.einsum("bd,bcd->bc", image, classes)
        logits = logit_scale * cos
        return logits if logit_bias is None else logits + logit_bias


def classification_loss(image_embeds: torch.Tensor, class_embeds: torch.Tensor, labels: torch.Tensor, logit_scale,
                        logit_bias=None, kind: Literal["softmax", "sigmoid"] = "softmax") -> torch.Tensor:
    """Mean over images of the loss of each image's logits against its class.

    ``softmax``: cross-entropy over the classes (CoOp; a bias cancels). ``sigmoid``: SigLIP's pairwise
    form, every (image, class) pair an independent binary decision, ``-sum_c log sigmoid(y_c * logit_c)``
    with ``y`` +1 for the image's class and -1 for the others, summed over classes as SigLIP sums over
    texts. An empty batch gives a graph-connected 0.
    """
    logits = class_logits(image_embeds, class_embeds, logit_scale, logit_bias)
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    labels = labels.to(logits.device).long()
    if kind == "softmax":
        return F.cross_entropy(logits, labels)
    if kind == "sigmoid":
        signs = 2.0 * F.one_hot(labels, logits.shape[1]).to(logits.dtype) - 1.0
        return -F.logsigmoid(signs * logits).sum(dim=1).mean()
    raise ValueError(f"kind must be 'softmax' or 'sigmoid', got {kind!r}")
