"""NegCLIP: contrastive fine-tuning with hard-negative captions and images (Yuksekgonul et al., ICLR 2023,
https://arxiv.org/abs/2210.01936)."""

from __future__ import annotations

import random
from typing import Any

import torch

from tunevl.data.hard_negatives import hard_negatives
from tunevl.errors import DataError
from tunevl.losses import negclip_loss
from tunevl.models.registry import DUAL_ENCODER
from tunevl.objectives.base import Objective


class NegClip(Objective):
    """InfoNCE over ``[I; I_neg]`` against ``[T; T of I_neg; hard captions]`` (:func:`tunevl.losses.negclip_loss`).

    Per record (NegCLIP's loader): the image and its caption; one hard caption, drawn from the
    record's ``negatives`` or, without them, made by word swaps of the caption
    (:func:`tunevl.data.hard_negatives.hard_negatives`); and, when the record has a
    ``negative_image`` (a near neighbour, e.g. from NegCLIP's TSV), that image as an extra image
    row with its caption ``negative_image_text`` and one hard caption of it
    (``negative_image_negatives``, or word swaps). Records without any swappable part or neighbour
    simply add no hard negative. The draws are seeded by ``(seed, record index)``: the same every
    epoch and on every process. NegCLIP redraws at each access; fixed draws keep resumed runs exact.

    The term replaces ``contrastive`` (it contains it), and like it is a mean over the micro-batch
    gathered across processes; positives and hard captions are gathered separately so rows stay
    aligned.

    Args:
        weight: Multiplier in the total loss.
        generate_negatives: Make word-swap hard captions for records (and neighbours) without their own.
        negative_images: Use the records' ``negative_image`` rows; off trains on hard captions only.
        local_loss: Each process scores only its own rows against the gathered columns (less memory,
            same loss and gradients).
        seed: Seed of the hard-caption draws.
    """

    requires = frozenset({"image", "text"})
    families = DUAL_ENCODER
    # GradCache: image rows pair with text rows (both [I; I_neg] order, chunk by chunk); hard captions are
    # columns only; negclip_loss does not depend on the order of its rows.
    embedding_loss = True
    ragged_outputs = frozenset({"image_embeds", "text_embeds", "negative_text_embeds"})

    def __init__(self, weight: float = 1.0, generate_negatives: bool = True, negative_images: bool = True,
                 local_loss: bool = False, seed: int = 0):
        super().__init__(weight)
        self.generate_negatives = generate_negatives
        self.negative_images = negative_images
        # Optional image fields this objective reads: pre-flight checks their files too.
        self.image_fields = ("negative_image",) if negative_images else ()
        self.local_loss = local_loss
        self.seed = seed

    def _hard_caption(self, given, text: str, rng: random.Random) -> str | None:
        if given:
            return rng.choice(list(given))
        if not self.generate_negatives:
            return None
        candidates = hard_negatives(text, max_candidates=None)
        return rng.choice(candidates) if candidates else None

    def layout(self, records: list[dict]) -> tuple[list[str], list, list[str], list[str]]:
        """``(captions, hard-negative images, their captions, hard captions)`` of a micro-batch."""
        captions, neg_images, neg_texts, hard = [], [], [], []
        for k, r in enumerate(records):
            rng = random.Random(f"tunevl.negclip/{self.seed}/{r.get('index', k)}")
            captions.append(r["text"])
            hard.append(self._hard_caption(r.get("negatives"), r["text"], rng))
            if self.negative_images and r.get("negative_image") is not None:
                text = r.get("negative_image_text")
                if not text:
                    raise DataError(f"record {r.get('index', k)}: negative_image needs negative_image_text "
                                    "(the caption of the hard-negative image)")
                neg_images.append(r["negative_image"])
                neg_texts.append(text)
                hard.append(self._hard_caption(r.get("negative_image_negatives"), text, rng))
        return captions, neg_images, neg_texts, [h for h in hard if h is not None]

    def collate(self, view, records: list[dict]) -> dict[str, Any]:
        """All texts in one tokenisation (captions, neighbours' captions, hard captions) and the neighbours' pixels."""
        captions, neg_images, neg_texts, hard = self.layout(records)
        tokens = view.tokenize(captions + neg_texts + hard)
        out = {f"negclip_{k}": v for k, v in tokens.items()}
        if neg_images:
            out["negative_pixel_values"] = view.preprocess_images(neg_images)
        return out

    def encode(self, view, batch: dict[str, Any]) -> dict[str, Any]:
        pixels = batch["pixel_values"]
        if batch.get("negative_pixel_values") is not None:
            pixels = torch.cat([pixels, batch["negative_pixel_values"].to(pixels.dtype)])
        texts = view.encode_texts(batch["negclip_input_ids"], batch.get("negclip_attention_mask"))
        rows = pixels.shape[0]
        return {
            "image_embeds": view.encode_images(pixels),
            "text_embeds": texts[:rows],
            "negative_text_embeds": texts[rows:],
            "logit_scale": view.logit_scale(),
            "logit_bias": view.logit_bias(),
        }

    def loss(self, image_embeds, text_embeds, negative_text_embeds, logit_scale, logit_bias=None) -> dict[str, torch.Tensor]:
        return {"negclip": negclip_loss(image_embeds, text_embeds, negative_text_embeds, logit_scale, logit_bias,
                                        local_loss=self.local_loss)}
