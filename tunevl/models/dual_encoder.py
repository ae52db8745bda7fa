"""Shared base of the dual-encoder family views (CLIP, SigLIP).

A subclass names its transformers model class, LoRA presets and trainable extras,
and implements :meth:`DualEncoderView.tokenize` and :meth:`DualEncoderView.logit_scale`;
loading, batching, the image/text encoders and the extras bookkeeping live here.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tunevl.data.images import load_image

_UNSET = object()


class DualEncoderView:
    """Images and texts to L2-normalised embeddings, plus the logit scale (and bias).

    The wrapped model may be a plain transformers model or a peft model around it;
    LoRA layers are injected in place, so the same calls serve both.

    Subclasses set:
        family: the family name of the registry.
        model_class: name of the transformers class loaded by :meth:`from_pretrained`.
        lora_presets: preset name -> regex over module names (``adapters.lora.target_modules``).
        extra_names: base-model parameters trained when ``model.train_logit_scale`` is set.
    """

    family: ClassVar[str]
    model_class: ClassVar[str]
    lora_presets: ClassVar[dict[str, str]]
    extra_names: ClassVar[tuple[str, ...]] = ("logit_scale",)

    def __init__(self, model: nn.Module, processor: Any, config=None):
        self.model = model
        self.processor = processor
        self.config = config

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, config, torch_dtype=None) -> "DualEncoderView":
        import transformers
        from transformers import AutoProcessor

        from tunevl.models.tiny import resolve_builtin

        path = resolve_builtin(config.name_or_path)
        kwargs = dict(revision=config.revision, trust_remote_code=config.trust_remote_code)
        model_cls = getattr(transformers, cls.model_class)
        with cls.loading_patches(model_cls):
            model = model_cls.from_pretrained(path, dtype=torch_dtype or torch.float32, **kwargs)
        processor = AutoProcessor.from_pretrained(path, **kwargs)
        model.requires_grad_(False)
        view = cls(model, processor, config)
        if config.train_logit_scale:
            for name in cls.extra_names:
                getattr(view.base_model, name).requires_grad_(True)
        return view

    @classmethod
    @contextlib.contextmanager
    def loading_patches(cls, model_cls):
        """Class settings in force while ``from_pretrained`` builds the model.

        The logit scale and bias load and stay in fp32 whatever the frozen base's dtype (bf16 would
        turn a scale of 100 into 98.9: PITFALLS.md), through transformers' own
        ``_keep_in_fp32_modules_strict``, restored on exit.
        """
        before = model_cls.__dict__.get("_keep_in_fp32_modules_strict", _UNSET)
        model_cls._keep_in_fp32_modules_strict = sorted(set(model_cls._keep_in_fp32_modules_strict or ()) | set(cls.extra_names))
        try:
            yield
        finally:
            if before is _UNSET:
                del model_cls._keep_in_fp32_modules_strict
            else:
                model_cls._keep_in_fp32_modules_strict = before

    @property
    def base_model(self) -> nn.Module:
        """The underlying transformers model (inside peft wrappers, if any)."""
        m = self.model
        if hasattr(m, "get_base_model"):
            m = m.get_base_model()
        return m

    def extra_trainables(self) -> dict[str, nn.Parameter]:
        """Trainable parameters that are not adapter weights (saved in the bundle's side file)."""
        params = {name: getattr(self.base_model, name) for name in self.extra_names}
        return {name: p for name, p in params.items() if p.requires_grad}

    def load_extras(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, value in tensors.items():
            if name not in self.extra_names:
                raise ValueError(f"unknown extra tensor {name!r} for the {self.family} family")
            param = getattr(self.base_model, name)
            with torch.no_grad():
                param.copy_(value.reshape(param.shape))

    def external_parameters(self) -> list[nn.Parameter]:
        """Parameters the objectives read outside any module's forward; ZeRO-3 gathers them with the train module."""
        return [getattr(self.base_model, name) for name in self.extra_names]

    def zero3_external_parameters(self) -> list[tuple[nn.Module, nn.Parameter]]:
        """``(module, parameter)`` pairs where the module's forward reads a child's parameter directly.

        ZeRO-3 gathers a parameter in its owner's forward only; CLIP's and SigLIP's text embeddings read
        ``position_embedding.weight.shape`` before calling the child (an empty ``(0,)`` tensor outside it).
        """
        embeddings = self.base_model.text_model.embeddings
        return [(embeddings, embeddings.position_embedding.weight)]

    # ---- batches -----------------------------------------------------------------------
    @property
    def max_text_length(self) -> int:
        return self.base_model.config.text_config.max_position_embeddings

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids (and an attention mask where the family uses one) for ``encode_texts``."""
        raise NotImplementedError

    def preprocess_images(self, images) -> torch.Tensor:
        out = self.processor.image_processor([load_image(im) for im in images], return_tensors="pt")
        return out["pixel_values"]

    def collate(self, records: list[dict], fields: set[str]) -> dict[str, Any]:
        """Turn records into model inputs for the fields the objectives need."""
        batch: dict[str, Any] = {"index": torch.tensor([r.get("index", -1) for r in records])}
        if "image" in fields:
            batch["pixel_values"] = self.preprocess_images([r["image"] for r in records])
        if "text" in fields:
            batch.update(self.tokenize([r["text"] for r in records]))
        return batch

    # ---- encoders ----------------------------------------------------------------------
    def _dtype(self) -> torch.dtype:
        return self.base_model.vision_model.embeddings.patch_embedding.weight.dtype

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.base_model.get_image_features(pixel_values=pixel_values.to(self._dtype()))
        return F.normalize(out.pooler_output.float(), dim=-1)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.base_model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return F.normalize(out.pooler_output.float(), dim=-1)

    def logit_scale(self) -> torch.Tensor:
        """The multiplier of cosine similarities (already exponentiated), shape [1], fp32."""
        raise NotImplementedError

    def logit_bias(self) -> torch.Tensor | None:
        """The additive logit bias, shape [1], fp32; None for families without one."""
        return None
