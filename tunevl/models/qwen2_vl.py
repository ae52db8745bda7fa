"""Qwen2-VL family view over ``transformers.Qwen2VLForConditionalGeneration`` (Wang et al. 2024, https://arxiv.org/abs/2409.12191).

Images take a variable number of tokens (``image_grid_thw``), bounded by ``max_pixels``; the
language model uses multimodal RoPE, whose positions come from ``mm_token_type_ids``.
"""

from __future__ import annotations

import torch

from tunevl.models.lvlm import LvlmView
from tunevl.models.processors import Qwen2VLImageOnlyProcessor

_LM = r"model\.language_model\.layers\.\d+"


class Qwen2VLView(LvlmView):
    """Qwen2-VL: a ViT with 2x2 patch merging (the merger is the projector) and a Qwen2 language model."""

    family = "qwen2_vl"
    model_class = "Qwen2VLForConditionalGeneration"
    lora_presets = {
        "language-attention": rf"{_LM}\.self_attn\.(q_proj|k_proj|v_proj|o_proj)",
        "language-all-linear": rf"{_LM}\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))",
        "vision-attention": r"model\.visual\.blocks\.\d+\.attn\.(qkv|proj)",
    }
    lora_modules_to_save_presets = {"projector": ["merger"]}
    unquantized_modules = ("model.visual", "lm_head")
    image_anchor = "<|vision_end|>"
    end_of_turn = "<|im_end|>"
    model_input_names = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
    processor_class = Qwen2VLImageOnlyProcessor  # AutoProcessor would want a video processor (torchvision)

    @classmethod
    def load_processor(cls, path, **kwargs):
        return cls.processor_class.from_pretrained(path, **kwargs)

    @classmethod
    def apply_processor_kwargs(cls, processor, kwargs):
        kwargs = dict(kwargs)
        size = dict(processor.image_processor.size)
        for key, edge in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
            if key in kwargs:
                size[edge] = int(kwargs.pop(key))
        processor.image_processor.size = size
        super().apply_processor_kwargs(processor, kwargs)

    def vision_trunk(self):
        visual = self.inner_model.visual
        return [visual.patch_embed, *visual.blocks]

    def projector(self):
        return self.inner_model.visual.merger

    def process_images(self, images):
        out = self.processor.image_processor(images, return_tensors="pt")
        grid = out["image_grid_thw"]
        merge = self.processor.image_processor.merge_size
        return {"pixel_values": out["pixel_values"], "image_grid_thw": grid}, (grid.prod(-1) // merge**2).tolist()

    def num_image_tokens(self, image) -> int:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        ip = self.processor.image_processor
        w, h = image.size
        h2, w2 = smart_resize(h, w, factor=ip.patch_size * ip.merge_size,
                              min_pixels=ip.size["shortest_edge"], max_pixels=ip.size["longest_edge"])
        return (h2 // ip.patch_size) * (w2 // ip.patch_size) // ip.merge_size**2

    def extra_text_inputs(self, input_ids, labels=None):
        return {"mm_token_type_ids": (input_ids == self.image_token_id).int()}

    def image_features(self, image_inputs) -> torch.Tensor:
        return self.inner_model.get_image_features(image_inputs["pixel_values"], image_inputs["image_grid_thw"])
