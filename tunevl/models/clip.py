"""CLIP family view over ``transformers.CLIPModel`` (Radford et al. 2021, https://arxiv.org/abs/2103.00020)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunevl.data.images import load_image

_ATTN = r"(q_proj|k_proj|v_proj|out_proj)"


class ClipView:
    """Dual-encoder view: images and texts to L2-normalised embeddings, plus the logit scale.

    The wrapped model may be a plain ``CLIPModel`` or a peft model around it; LoRA
    layers are injected in place, so the same calls serve both.
    """

    family = "clip"
    # Presets for ``adapters.lora.target_modules``; regexes over module names of CLIPModel.
    lora_presets = {
        "text-attention": rf"text_model\.encoder\.layers\.\d+\.self_attn\.{_ATTN}",
        "vision-attention": rf"vision_model\.encoder\.layers\.\d+\.self_attn\.{_ATTN}",
        "attention": rf"(text|vision)_model\.encoder\.layers\.\d+\.self_attn\.{_ATTN}",
        "all-linear": rf"((text|vision)_model\.encoder\.layers\.\d+\.(self_attn\.{_ATTN}|mlp\.(fc1|fc2))"
        r"|text_projection|visual_projection)",
    }
    max_logit_scale = math.log(100.0)  # open_clip's clamp, applied in the forward (see PITFALLS.md)

    def __init__(self, model: nn.Module, processor: Any, config=None):
        self.model = model
        self.processor = processor
        self.config = config
        self._fix_logit_scale_shape()

    @staticmethod
    def inference_class():
        """What ``tunevl.load`` returns for bundles of this family."""
        from tunevl.inference import DualEncoder

        return DualEncoder

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, config, torch_dtype=None) -> "ClipView":
        from transformers import AutoProcessor, CLIPModel

        from tunevl.models.tiny import resolve_builtin

        path = resolve_builtin(config.name_or_path)
        kwargs = dict(revision=config.revision, trust_remote_code=config.trust_remote_code)
        model = CLIPModel.from_pretrained(path, dtype=torch_dtype or torch.float32, **kwargs)
        processor = AutoProcessor.from_pretrained(path, **kwargs)
        model.requires_grad_(False)
        view = cls(model, processor, config)
        if config.train_logit_scale:
            view.base_model.logit_scale.requires_grad_(True)
        return view

    @property
    def base_model(self) -> nn.Module:
        """The underlying ``CLIPModel`` (inside peft wrappers, if any)."""
        m = self.model
        if hasattr(m, "get_base_model"):
            m = m.get_base_model()
        return m

    def _fix_logit_scale_shape(self) -> None:
        # DeepSpeed's initial broadcast fails on 0-dim parameters; a [1] scale behaves the same.
        m = self.base_model
        if m.logit_scale.dim() == 0:
            m.logit_scale = nn.Parameter(m.logit_scale.detach().reshape(1), requires_grad=m.logit_scale.requires_grad)

    def extra_trainables(self) -> dict[str, nn.Parameter]:
        """Trainable parameters that are not adapter weights (saved in the bundle's side file)."""
        p = self.base_model.logit_scale
        return {"logit_scale": p} if p.requires_grad else {}

    def load_extras(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, value in tensors.items():
            if name != "logit_scale":
                raise ValueError(f"unknown extra tensor {name!r} for the clip family")
            with torch.no_grad():
                self.base_model.logit_scale.copy_(value.reshape(1))

    # ---- batches -----------------------------------------------------------------------
    @property
    def max_text_length(self) -> int:
        return self.base_model.config.text_config.max_position_embeddings

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tok = self.processor.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt"
        )
        return {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}

    def preprocess_images(self, images) -> torch.Tensor:
        out = self.processor.image_processor([load_image(im) for im in images], return_tensors="pt")
        return out["pixel_values"]

    def collate(self, records: list[dict], fields: set[str]) -> dict[str, Any]:
        """Turn records into model inputs for the fields the objectives need."""
        batch: dict[str, Any] = {"index": torch.tensor([r.get("index", -1) for r in records])}
        if "image" in fields:
            batch["pixel_values"] = self.preprocess_images([r["image"] for r in records])
        if "text" in fields:
            tok = self.tokenize([r["text"] for r in records])
            batch["input_ids"], batch["attention_mask"] = tok["input_ids"], tok["attention_mask"]
        return batch

    # ---- encoders ----------------------------------------------------------------------
    def _dtype(self) -> torch.dtype:
        return self.base_model.visual_projection.weight.dtype

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.base_model.get_image_features(pixel_values=pixel_values.to(self._dtype()))
        return F.normalize(out.pooler_output.float(), dim=-1)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.base_model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return F.normalize(out.pooler_output.float(), dim=-1)

    def logit_scale(self) -> torch.Tensor:
        """The multiplier exp(t), clamped in the forward so DeepSpeed's master weights cannot undo it."""
        return self.base_model.logit_scale.float().clamp(max=self.max_logit_scale).exp()

    def logit_bias(self) -> torch.Tensor | None:
        return None

    def external_parameters(self) -> list[nn.Parameter]:
        """Parameters read outside their owner's forward; ZeRO-3 must gather them explicitly."""
        return [self.base_model.logit_scale]
