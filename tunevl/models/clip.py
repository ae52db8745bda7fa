"""CLIP family view over ``transformers.CLIPModel`` (Radford et al. 2021, https://arxiv.org/abs/2103.00020)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import nn

from tunevl.models.dual_encoder import DualEncoderView

_ATTN = r"(q_proj|k_proj|v_proj|out_proj)"


class ClipView(DualEncoderView):
    """Dual-encoder view of a ``CLIPModel``: embeddings and the logit scale (no bias).

    Texts are padded to the longest in the batch with an attention mask; CLIP pools
    at the eos token (see PITFALLS.md).
    """

    family = "clip"
    model_class = "CLIPModel"
    # Presets for ``adapters.lora.target_modules``; regexes over module names of CLIPModel.
    lora_presets = {
        "text-attention": rf"text_model\.encoder\.layers\.\d+\.self_attn\.{_ATTN}",
        "vision-attention": rf"vision_model\.encoder\.layers\.\d+\.self_attn\.{_ATTN}",
        "attention": rf"(text|vision)_model\.encoder\.layers\.\d+\.self_attn\.{_ATTN}",
        "all-linear": rf"((text|vision)_model\.encoder\.layers\.\d+\.(self_attn\.{_ATTN}|mlp\.(fc1|fc2))"
        r"|text_projection|visual_projection)",
    }
    max_logit_scale = math.log(100.0)  # open_clip's cap of the temperature (see PITFALLS.md)

    def __init__(self, model: nn.Module, processor: Any, config=None):
        super().__init__(model, processor, config)
        self._fix_logit_scale_shape()

    def _fix_logit_scale_shape(self) -> None:
        # DeepSpeed's initial broadcast fails on 0-dim parameters; a [1] scale behaves the same.
        m = self.base_model
        if m.logit_scale.dim() == 0:
            m.logit_scale = nn.Parameter(m.logit_scale.detach().reshape(1), requires_grad=m.logit_scale.requires_grad)
        self.original_shapes = {"logit_scale": torch.Size([])}  # what bundles and merges write back (CLIPModel's shape)

    @classmethod
    @contextlib.contextmanager
    def loading_patches(cls, model_cls):
        """Besides the fp32 scale (see the base class): under ZeRO-3's partitioned loading (``zero.Init``) the
        0-dim ``logit_scale`` would fail DeepSpeed's parameter broadcast, so the model is built with a ``[1]``
        scale and the checkpoint's 0-dim value is reshaped as it is loaded into it."""
        from transformers.integrations import is_deepspeed_zero3_enabled

        with super().loading_patches(model_cls):
            if not is_deepspeed_zero3_enabled():
                yield
                return
            init, load = model_cls.__init__, model_cls._load_from_state_dict

            def init_one_dim(self, *args, **kwargs):
                init(self, *args, **kwargs)
                if self.logit_scale.dim() == 0:
                    self.logit_scale = nn.Parameter(self.logit_scale.detach().reshape(1))

            def load_one_dim(self, state_dict, prefix, *args, **kwargs):
                key = prefix + "logit_scale"
                if key in state_dict and state_dict[key].dim() == 0:
                    state_dict[key] = state_dict[key].reshape(1)
                return load(self, state_dict, prefix, *args, **kwargs)

            model_cls.__init__, model_cls._load_from_state_dict = init_one_dim, load_one_dim
            try:
                yield
            finally:
                model_cls.__init__, model_cls._load_from_state_dict = init, load

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tok = self.processor.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt"
        )
        return {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}

    def logit_scale(self) -> torch.Tensor:
        """The multiplier ``exp(min(t, ln 100))``, with the gradient of ``exp(min)`` flowing to ``t`` also at or above
        the cap (straight through), so the scale can move back down. OpenAI's checkpoints store 4.6052, just above
        fp32 ``ln 100``: a plain clamp would give it a zero gradient from the first step. The parameter itself is
        clamped after each optimizer step (:meth:`parameter_bounds`), on DeepSpeed's fp32 master copy."""
        raw = self.base_model.logit_scale.float()
        return (raw - (raw - self.max_logit_scale).clamp(min=0).detach()).exp()

    def parameter_bounds(self) -> dict[str, tuple[nn.Parameter, float | None, float | None]]:
        """Trainable parameters the engine clamps after every optimizer step: ``name -> (param, min, max)``."""
        p = self.base_model.logit_scale
        return {"logit_scale": (p, 0.0, self.max_logit_scale)} if p.requires_grad else {}
