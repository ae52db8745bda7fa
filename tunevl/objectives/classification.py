"""Classification over class prompts: the objective of prompt learning (CoOp, CoCoOp, VPT) on dual encoders."""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch

from tunevl.data.augment import Augment, augment_image
from tunevl.data.images import load_image
from tunevl.eval.zeroshot import check_templates
from tunevl.losses import classification_loss
from tunevl.models.registry import DUAL_ENCODER
from tunevl.objectives.base import Objective
from tunevl.objectives.feature_cache import FeatureCache, cache_blocker

log = logging.getLogger("tunevl")


class Classification(Objective):
    """Cross-entropy of each image against one text embedding per class, with the model's logit scale
    (CoOp, https://arxiv.org/abs/2109.01134; OBJECTIVES.md section 4).

    The class embeddings come from the model's learned prompts when it has them (``adapters.coop``,
    ``adapters.cocoop``: CoCoOp's differ per image), otherwise from ``templates`` through the text
    tower (VPT, or LoRA alone). Class names are the training dataset's ``classnames`` unless given.
    SigLIP adds its logit bias; ``loss: sigmoid`` scores every (image, class) pair as SigLIP's loss
    scores image-text pairs, ``softmax`` is CoOp's cross-entropy. The term is a mean over the
    micro-batch's records, counted (:meth:`counts`): under GradCache it runs chunk by chunk, exactly.

    **Feature cache.** When nothing in the image tower trains and ``augment`` is ``none``, image
    features are computed once before training and looked up by record index, and training batches
    carry no pixels (:mod:`tunevl.objectives.feature_cache`). Visual prompts, LoRA on the vision tower
    or augmentation switch it off; the log says which.

    Args:
        weight: Multiplier in the total loss.
        loss: ``softmax`` (cross-entropy over classes) or ``sigmoid`` (SigLIP's pairwise form).
        templates: Prompt template(s) with ``{}`` for the class name, used when the model has no learned
            text prompts; several are ensembled (mean of unit embeddings, renormalised).
        classnames: The class names indexed by ``label``: a list, or a file (JSON list, or one per
            line). None: the training dataset's ``classnames``.
        feature_cache: Cache the image features of a frozen image tower (see above).
        augment: Random augmentation of training images: ``none``, ``flip`` or ``crop_flip`` (CoOp's
            random resized crop and flip).
    """

    requires = frozenset({"image", "label"})
    families = DUAL_ENCODER

    def __init__(self, weight: float = 1.0, loss: Literal["softmax", "sigmoid"] = "softmax",
                 templates: str | list[str] = "a photo of a {}.", classnames: list[str] | str | None = None,
                 feature_cache: bool = True, augment: Augment = "none"):
        super().__init__(weight)
        if loss not in ("softmax", "sigmoid"):
            raise ValueError(f"loss must be 'softmax' or 'sigmoid', got {loss!r}")
        if augment not in ("none", "flip", "crop_flip"):
            raise ValueError(f"augment must be none, flip or crop_flip, got {augment!r}")
        self.kind, self.templates, self.augment = loss, check_templates(templates), augment
        self.given_classnames, self.feature_cache = classnames, feature_cache
        self.classnames: list[str] | None = None
        self.cache = FeatureCache()
        self.use_cache = False
        self._prompts = None  # the model's tokenised class prompts
        self._template_batch: dict | None = None
        self._frozen_classes: torch.Tensor | None = None
        self._image_size = None

    # ---- before training ----------------------------------------------------------------------
    def setup(self, view, dataset) -> None:
        from tunevl.data.sources.base import read_classnames
        from tunevl.errors import DataError

        names = read_classnames(self.given_classnames) or getattr(dataset, "classnames", None)
        if not names:
            raise DataError("the classification objective needs class names: the training data has no classnames; "
                            "set them on the objective (classnames: [...] or a file)")
        self.classnames = list(names)
        prompts = getattr(view, "text_prompts", None)
        if prompts is not None:
            prompts.bind_classnames(self.classnames)
            self._prompts = prompts.class_prompts(self.classnames)
        else:
            texts = [t.format(c) for c in self.classnames for t in self.templates]
            self._template_batch = view.tokenize(texts)
        self._image_size = view.base_model.config.vision_config.image_size
        reason = cache_blocker(view, self.augment) if self.feature_cache else "feature_cache: false"
        self.use_cache = reason is None
        if self.feature_cache and reason is not None:
            log.info("feature cache off: %s", reason)

    def prepare(self, view, dataset, *, dist, cfg, bf16: bool) -> None:
        if self.use_cache and not self.cache.filled:
            self.cache.fill(view, dataset, batch_size=cfg.per_device_eval_batch_size, device=dist.device,
                            world_size=dist.world_size, rank=dist.rank, num_workers=cfg.dataloader_num_workers,
                            bf16_autocast=bf16 and cfg.deepspeed is None)  # as TorchEngine.forward runs it

    def batch_fields(self) -> frozenset[str]:
        own_pixels = self.use_cache or self.augment != "none"
        return frozenset({"label"}) if own_pixels else self.requires

    def collate(self, view, records: list[dict]) -> dict[str, Any]:
        out: dict[str, Any] = {"labels": torch.tensor([int(r["label"]) for r in records])}
        if self.augment != "none" and not self.use_cache:
            size = self._image_size or view.base_model.config.vision_config.image_size
            images = [augment_image(load_image(r["image"]), self.augment, size) for r in records]
            out["pixel_values"] = view.preprocess_images(images)
        return out

    def counts(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Labelled records: the term is a mean over each record's class scores."""
        return {"classification": batch["labels"].numel()}

    # ---- training ---------------------------------------------------------------------------------
    def encode(self, view, batch: dict[str, Any]) -> dict[str, Any]:
        if self.classnames is None:
            raise RuntimeError("call Classification.setup(view, dataset) before training")
        if self.use_cache:
            image_embeds = self.cache.lookup(batch["index"])
        else:
            image_embeds = view.encode_images(batch["pixel_values"])
        return {"image_embeds": image_embeds, "class_embeds": self.class_embeds(view, image_embeds),
                "labels": batch["labels"], "logit_scale": view.logit_scale(), "logit_bias": view.logit_bias()}

    def class_embeds(self, view, image_embeds: torch.Tensor) -> torch.Tensor:
        """``[C, D]`` unit class embeddings (``[B, C, D]`` with CoCoOp's image-conditioned prompts)."""
        prompts = getattr(view, "text_prompts", None)
        if prompts is not None:
            return prompts.encode(view, self._prompts, image_embeds if prompts.meta_net is not None else None)
        if self._frozen_classes is not None:
            return self._frozen_classes
        model = view.base_model
        towers = [model.text_model] + ([model.text_projection] if hasattr(model, "text_projection") else [])
        frozen = not any(p.requires_grad for tower in towers for p in tower.parameters())
        batch = {k: v.to(image_embeds.device) for k, v in self._template_batch.items()}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            embeds = view.encode_texts(**batch)
            embeds = embeds.reshape(len(self.classnames), len(self.templates), -1).mean(dim=1)
            embeds = torch.nn.functional.normalize(embeds, dim=-1)
        if frozen:  # a frozen text tower gives the same class embeddings every step
            self._frozen_classes = embeds
        return embeds

    def loss(self, image_embeds, class_embeds, labels, logit_scale, logit_bias=None) -> dict[str, torch.Tensor]:
        return {"classification": classification_loss(image_embeds, class_embeds, labels, logit_scale, logit_bias,
                                                      kind=self.kind)}
