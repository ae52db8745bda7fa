"""Contrastive image-text objectives: CLIP's InfoNCE and SigLIP's sigmoid loss."""

from __future__ import annotations

from typing import Any

import torch

from tunevl.losses import info_nce, sigmoid_loss
from tunevl.losses.distributed import world_info
from tunevl.models.registry import DUAL_ENCODER
from tunevl.objectives.base import Objective


def equal_sizes(embeds: torch.Tensor) -> list[int]:
    """Every rank's rows when all ranks hold the same number (the loop's micro-batches are equal on every rank)."""
    return [embeds.shape[0]] * world_info()[1]


class _ImageTextPairs(Objective):
    """Encodes matching image-text pairs with the view's logit scale and bias."""

    requires = frozenset({"image", "text"})

    def encode(self, view, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {
            "image_embeds": view.encode_images(batch["pixel_values"]),
            "text_embeds": view.encode_texts(batch["input_ids"], batch.get("attention_mask")),
            "logit_scale": view.logit_scale(),
            "logit_bias": view.logit_bias(),
        }


class Contrastive(_ImageTextPairs):
    """Symmetric InfoNCE over in-batch pairs, gathered across ranks (CLIP, https://arxiv.org/abs/2103.00020).

    On SigLIP the view's logit bias is passed too; a constant shift of every logit
    cancels in the softmax, so it leaves the loss unchanged and gets a (numerically)
    zero gradient. It stays in the graph so DDP sees every trainable parameter used.

    Args:
        weight: Multiplier in the total loss.
        local_loss: Each rank scores only its own rows against the gathered batch
            (O(B·WB) memory instead of O((WB)²)); the loss and gradients are unchanged.
    """

    families = DUAL_ENCODER

    def __init__(self, weight: float = 1.0, local_loss: bool = False):
        super().__init__(weight)
        self.local_loss = local_loss

    def loss(self, image_embeds, text_embeds, logit_scale, logit_bias=None) -> dict[str, torch.Tensor]:
        return {"contrastive": info_nce(image_embeds, text_embeds, logit_scale, logit_bias, local_loss=self.local_loss,
                                        sizes=equal_sizes(image_embeds))}


class Sigmoid(_ImageTextPairs):
    """SigLIP's pairwise sigmoid loss over in-batch pairs (Zhai et al. 2023, https://arxiv.org/abs/2303.15343).

    Every image-text pair is an independent binary decision (match or not), so there is
    no softmax over the batch; across ranks the texts are gathered with gradient
    (:func:`tunevl.losses.sigmoid_loss`).

    Families: SigLIP, whose logit scale and bias it uses; and CLIP, which has no bias:
    the bias is then 0 and fixed. With CLIP's scale (about 14 to 100) and a zero bias
    the many negative pairs dominate the first steps; SigLIP starts its bias at -10 to
    avoid that, so on CLIP prefer ``contrastive`` unless you want the sigmoid form.

    Args:
        weight: Multiplier in the total loss.
    """

    families = DUAL_ENCODER

    def loss(self, image_embeds, text_embeds, logit_scale, logit_bias=None) -> dict[str, torch.Tensor]:
        return {"sigmoid": sigmoid_loss(image_embeds, text_embeds, logit_scale, logit_bias, sizes=equal_sizes(image_embeds))}
