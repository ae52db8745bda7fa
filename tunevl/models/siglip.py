"""SigLIP family view over ``transformers.SiglipModel`` (Zhai et al. 2023, https://arxiv.org/abs/2303.15343)."""

from __future__ import annotations

import torch

from tunevl.models.dual_encoder import DualEncoderView

_ATTN = r"(q_proj|k_proj|v_proj|out_proj)"
_LAYERS = r"_model\.encoder\.layers\.\d+\."


class SiglipView(DualEncoderView):
    """Dual-encoder view of a ``SiglipModel``: embeddings, logit scale and logit bias.

    Texts are padded to ``max_length`` and encoded without an attention mask, as SigLIP
    was trained: the text tower pools the last position, which then holds eos or padding.

    ``model.train_logit_scale`` trains both the logit scale and the logit bias (SigLIP
    learns both; the bias offsets the many negative pairs of the sigmoid loss). No preset targets the vision tower's attention-pooling
    head: its ``nn.MultiheadAttention`` reads ``out_proj.weight`` directly, so a LoRA
    there would never get a gradient (PITFALLS.md).
    """

    family = "siglip"
    model_class = "SiglipModel"
    lora_presets = {
        "text-attention": rf"text{_LAYERS}self_attn\.{_ATTN}",
        "vision-attention": rf"vision{_LAYERS}self_attn\.{_ATTN}",
        "attention": rf"(text|vision){_LAYERS}self_attn\.{_ATTN}",
        "all-linear": rf"(text|vision){_LAYERS}(self_attn\.{_ATTN}|mlp\.(fc1|fc2))",
    }
    extra_names = ("logit_scale", "logit_bias")
    vision_class_tokens = 0  # no class token: the attention-pooling head reads every position

    @property
    def image_embed_dim(self) -> int:
        return self.base_model.config.vision_config.hidden_size

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tok = self.processor.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_text_length,
            return_attention_mask=False,
            return_tensors="pt",
        )
        return {"input_ids": tok["input_ids"]}

    def text_pool_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """SigLIP's text tower reads the last position."""
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, dtype=torch.long)

    def logit_scale(self) -> torch.Tensor:
        """The multiplier exp(t'); unclamped, as in the paper and transformers, so a checkpoint's value is kept."""
        return self.base_model.logit_scale.float().exp()

    def logit_bias(self) -> torch.Tensor:
        return self.base_model.logit_bias.float()
