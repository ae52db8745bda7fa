"""Contrastive image-text objectives."""

from __future__ import annotations

from typing import Any

import torch

from tunevl.losses import info_nce
from tunevl.objectives.base import Objective


class Contrastive(Objective):
    """Symmetric InfoNCE over in-batch pairs, gathered across ranks (CLIP, https://arxiv.org/abs/2103.00020).

    Args:
        weight: Multiplier in the total loss.
        local_loss: Each rank scores only its own rows against the gathered batch
            (O(B·WB) memory instead of O((WB)²)); the loss and gradients are unchanged.
    """

    requires = frozenset({"image", "text"})
    families = ("clip", "siglip")

    def __init__(self, weight: float = 1.0, local_loss: bool = False):
        super().__init__(weight)
        self.local_loss = local_loss

    def encode(self, view, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {
            "image_embeds": view.encode_images(batch["pixel_values"]),
            "text_embeds": view.encode_texts(batch["input_ids"], batch.get("attention_mask")),
            "logit_scale": view.logit_scale(),
            "logit_bias": view.logit_bias(),
        }

    def loss(self, image_embeds, text_embeds, logit_scale, logit_bias=None) -> dict[str, torch.Tensor]:
        return {"contrastive": info_nce(image_embeds, text_embeds, logit_scale, logit_bias, local_loss=self.local_loss)}
