"""Image features of a frozen image tower, computed once for every training record and reused every epoch.

When nothing in the image tower trains (CoOp, CoCoOp without visual prompts) and no random
augmentation changes the pixels, every epoch would compute the same image features again. The cache
computes them once before the first step, keyed by the record ``index`` that every batch carries;
training batches then carry no pixels at all (the images are not even decoded).

Multi-process runs: every rank fills the whole cache. Rank ``r`` encodes its contiguous share of the
records in the same number of forwards as every other rank (the last share is padded by repeating the
last record), and the shares are all-gathered. So every rank runs the same forwards in the same
order (ZeRO-3 gathers parameters collectively), and during training no rank runs the image tower.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from functools import partial

import torch

log = logging.getLogger("tunevl")


def cache_blocker(view, augment: str = "none") -> str | None:
    """Why image features cannot be cached for this view, or None when they can."""
    if getattr(view, "visual_prompts", None) is not None:
        return "visual prompts train the image tower"
    model = view.base_model
    towers = [("vision_model", model.vision_model)]
    if hasattr(model, "visual_projection"):
        towers.append(("visual_projection", model.visual_projection))
    trainable = [f"{prefix}.{n}" for prefix, module in towers for n, p in module.named_parameters() if p.requires_grad]
    if any("lora_" in n for n in trainable):
        return "LoRA on the vision tower"
    if trainable:
        return f"trainable image-tower parameters ({trainable[0]})"
    if augment != "none":
        return f"random augmentation (augment: {augment})"
    return None


def _pixels(view, records):
    return view.preprocess_images([r["image"] for r in records])


class FeatureCache:
    """``features[index]``: the unit image embedding of training record ``index`` (fp32, on the training device)."""

    def __init__(self):
        self.features: torch.Tensor | None = None
        self.fill_seconds: float | None = None

    @property
    def filled(self) -> bool:
        return self.features is not None

    @torch.no_grad()
    def fill(self, view, dataset, *, batch_size: int, device, world_size: int = 1, rank: int = 0,
             bf16_autocast: bool = False, num_workers: int = 0) -> None:
        """Encode every record's image once (each rank its share, then all-gathered)."""
        started = time.time()
        n = len(dataset)
        share = math.ceil(n / world_size)
        own = [min(i, n - 1) for i in range(rank * share, (rank + 1) * share)]
        batches = [own[s : s + batch_size] for s in range(0, share, batch_size)]
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=partial(_pixels, view),
                                             num_workers=num_workers)
        model = view.model
        was_training = model.training
        model.eval()
        amp = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16_autocast else contextlib.nullcontext()
        try:
            with amp:
                local = torch.cat([view.encode_images(px.to(device)).float() for px in loader])
        finally:
            model.train(was_training)
        if world_size > 1:
            parts = [torch.empty_like(local) for _ in range(world_size)]
            torch.distributed.all_gather(parts, local.contiguous())
            local = torch.cat(parts)
        self.features = local[:n]
        self.fill_seconds = time.time() - started
        log.info("feature cache: %d image features computed once in %.1f s; the image tower does not run in training",
                 n, time.time() - started)

    def lookup(self, index: torch.Tensor) -> torch.Tensor:
        if self.features is None:
            raise RuntimeError("the feature cache is empty (fill it before training)")
        return self.features[index.to(self.features.device)]
