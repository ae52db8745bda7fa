"""The counting objective of "Teaching CLIP to Count to Ten" (Paiss et al., ICCV 2023, https://arxiv.org/abs/2302.12066)."""

from __future__ import annotations

import random
from typing import Any

import torch

from tunevl.data.counterfactuals import DEFAULT_NUMBERS, counterfactual
from tunevl.losses import counting_loss
from tunevl.models.registry import DUAL_ENCODER
from tunevl.objectives.base import Objective


class Counting(Objective):
    """Each counting image must prefer its caption over the caption with a wrong number.

    Train it next to the ordinary contrastive objective (``contrastive`` or ``sigmoid``), as the
    paper does: that one runs on every record, this one on the counting records only, i.e. those
    that carry ``count`` and whose caption states that count clearly (see
    :mod:`tunevl.data.counterfactuals`). A record may bring its own ``counterfactual`` caption
    (``tunevl data counterfactuals IN OUT`` writes them); otherwise one is made on the fly, the
    number drawn from ``numbers`` by a generator seeded with ``(seed, record index)`` (so a record
    gets the same counterfactual every epoch, on every process, and a resumed run repeats it).

    The term is :func:`tunevl.losses.counting_loss`, a mean over the counting records of the whole
    optimizer step (:meth:`counts`), whatever the split into micro-batches and processes. A
    micro-batch without counting records still runs the encoders on one placeholder row and
    contributes an exact zero, so every process runs the same graph (ZeRO-3 needs this).

    Args:
        weight: The paper's lambda, the multiplier in the total loss.
        numbers: The numbers a counterfactual may take (default two..ten, as in the paper).
        seed: Seed of the on-the-fly counterfactuals.
    """

    requires = frozenset({"image", "text"})
    families = DUAL_ENCODER

    def __init__(self, weight: float = 1.0, numbers: list[int] | None = None, seed: int = 0):
        super().__init__(weight)
        self.numbers = list(numbers) if numbers is not None else list(DEFAULT_NUMBERS)
        if len(self.numbers) < 2 or not all(isinstance(n, int) and 1 <= n <= 10 for n in self.numbers):
            raise ValueError(f"numbers must list at least two integers in 1..10, got {numbers}")
        self.seed = seed

    def counterfactual(self, record: dict, position: int = 0) -> str | None:
        """The record's counterfactual caption: its own, one made on the fly, or None (not a counting record)."""
        if record.get("count") is None or record.get("text") is None:
            return None
        if record.get("counterfactual"):
            return record["counterfactual"]
        index = record.get("index", position)
        rng = random.Random(f"tunevl.counting/{self.seed}/{index}")
        return counterfactual(record["text"], rng, count=int(record["count"]), numbers=self.numbers)

    def collate(self, view, records: list[dict]) -> dict[str, Any]:
        """Rows of the counting records in the micro-batch and their tokenised counterfactuals."""
        rows, texts = [], []
        for k, record in enumerate(records):
            cf = self.counterfactual(record, k)
            if cf is not None:
                rows.append(k)
                texts.append(cf)
        num = len(rows)
        if not rows:  # a placeholder row: the graph still runs, the term is multiplied by 0
            rows, texts = [0], [records[0]["text"]]
        tokens = view.tokenize(texts)
        return {"count_rows": torch.tensor(rows), "num_counting": torch.tensor(num),
                **{f"counterfactual_{k}": v for k, v in tokens.items()}}

    def counts(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Counting records: the term is a mean over the step's counting records."""
        return {"counting": batch["num_counting"]}

    def encode(self, view, batch: dict[str, Any]) -> dict[str, Any]:
        rows = batch["count_rows"]
        mask = batch.get("attention_mask")
        return {
            "image_embeds": view.encode_images(batch["pixel_values"][rows]),
            "text_embeds": view.encode_texts(batch["input_ids"][rows], None if mask is None else mask[rows]),
            "counterfactual_embeds": view.encode_texts(batch["counterfactual_input_ids"],
                                                       batch.get("counterfactual_attention_mask")),
            "logit_scale": view.logit_scale(),
            "num_counting": batch["num_counting"],
        }

    def loss(self, image_embeds, text_embeds, counterfactual_embeds, logit_scale, num_counting) -> dict[str, torch.Tensor]:
        value = counting_loss(image_embeds, text_embeds, counterfactual_embeds, logit_scale)
        return {"counting": value * (num_counting > 0)}
