"""Qwen2.5-VL family view over ``transformers.Qwen2_5_VLForConditionalGeneration`` (Bai et al. 2025,
https://arxiv.org/abs/2502.13923).

Everything a conversation needs is Qwen2-VL's (chat template, ``<|image_pad|>`` runs bounded by
``max_pixels``, multimodal RoPE from ``mm_token_type_ids``); the vision tower adds windowed attention
and SwiGLU blocks, under the same module names.
"""

from __future__ import annotations

from tunevl.models.processors import Qwen2_5_VLImageOnlyProcessor
from tunevl.models.qwen2_vl import Qwen2VLView


class Qwen2_5_VLView(Qwen2VLView):
    """Qwen2.5-VL: Qwen2-VL's conversation handling and presets on the Qwen2.5-VL model class."""

    family = "qwen2_5_vl"
    model_class = "Qwen2_5_VLForConditionalGeneration"
    processor_class = Qwen2_5_VLImageOnlyProcessor
