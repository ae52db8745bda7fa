"""LLaVA family view over ``transformers.LlavaForConditionalGeneration`` (Liu et al. 2023, https://arxiv.org/abs/2304.08485)."""

from __future__ import annotations

import torch

from tunevl.models.lvlm import LvlmView

_LM = r"model\.language_model\.layers\.\d+"


class LlavaView(LvlmView):
    """LLaVA-1.5 style models: a CLIP vision tower, an MLP projector and a Llama-style language model."""

    family = "llava"
    model_class = "LlavaForConditionalGeneration"
    lora_presets = {
        "language-attention": rf"{_LM}\.self_attn\.(q_proj|k_proj|v_proj|o_proj)",
        "language-all-linear": rf"{_LM}\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))",
        "vision-attention": r"model\.vision_tower\..*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)",
    }
    lora_modules_to_save_presets = {"projector": ["multi_modal_projector"]}
    unquantized_modules = ("model.vision_tower", "model.multi_modal_projector", "lm_head")
    image_anchor = "<image>\n"

    def vision_trunk(self):
        return [self.inner_model.vision_tower]

    def projector(self):
        return self.inner_model.multi_modal_projector

    def process_images(self, images):
        pixel_values = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values}, [self._tokens_for(pixel_values.shape[-2:])] * len(images)

    def _tokens_for(self, hw) -> int:
        # As LlavaProcessor counts them: patches + num_additional_image_tokens (1 for a CLIP tower's CLS,
        # 0 for SigLIP towers as in llava-interleave-qwen), minus the one "default" selection drops.
        proc, cfg = self.processor, self.base_model.config
        patch = getattr(proc, "patch_size", None) or cfg.vision_config.patch_size
        strategy = getattr(proc, "vision_feature_select_strategy", None) or cfg.vision_feature_select_strategy
        n = (hw[0] // patch) * (hw[1] // patch) + (getattr(proc, "num_additional_image_tokens", None) or 0)
        return n - (1 if strategy == "default" else 0)

    def num_image_tokens(self, image) -> int:
        # Every image is resized and cropped to one size, so every image takes the same number of tokens.
        if not hasattr(self, "_fixed_tokens"):
            from PIL import Image

            self._fixed_tokens = self.process_images([Image.new("RGB", (32, 32))])[1][0]
        return self._fixed_tokens

    def image_features(self, image_inputs) -> torch.Tensor:
        return self.inner_model.get_image_features(pixel_values=image_inputs["pixel_values"])
