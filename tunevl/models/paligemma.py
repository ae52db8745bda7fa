"""PaliGemma family view over ``transformers.PaliGemmaForConditionalGeneration`` (Beyer et al. 2024,
https://arxiv.org/abs/2407.07726; PaliGemma 2, Steiner et al. 2024, https://arxiv.org/abs/2412.03555).

PaliGemma has no chat template and no turns: a record is one question and its answer. The prefix is
the image tokens (before ``<bos>``), ``<bos>``, the question and ``\\n``; the suffix is the answer and
``<eos>``, as ``PaliGemmaProcessor(text=..., suffix=...)`` builds them. The prefix attends bidirectionally
and the suffix causally: ``token_type_ids`` are 1 on the suffix (the labelled tokens), 0 elsewhere.
"""

from __future__ import annotations

import torch

from tunevl.errors import DataError
from tunevl.models.lvlm import LvlmView

_LM = r"model\.language_model\.layers\.\d+"


class PaliGemmaView(LvlmView):
    """PaliGemma (2): a SigLIP tower, a linear projector and a Gemma (2) language model with tied embeddings."""

    family = "paligemma"
    model_class = "PaliGemmaForConditionalGeneration"
    lora_presets = {
        "language-attention": rf"{_LM}\.self_attn\.(q_proj|k_proj|v_proj|o_proj)",
        "language-all-linear": rf"{_LM}\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))",
        "vision-attention": r"model\.vision_tower\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)",
    }
    lora_modules_to_save_presets = {"projector": ["multi_modal_projector"]}
    unquantized_modules = ("model.vision_tower", "model.multi_modal_projector", "lm_head")
    model_input_names = ("input_ids", "attention_mask", "pixel_values", "token_type_ids")

    @property
    def image_anchor(self) -> str:  # after the image tokens and <bos>, before the question
        return self.tokenizer.bos_token

    def vision_trunk(self):
        return [self.inner_model.vision_tower]

    def projector(self):
        return self.inner_model.multi_modal_projector

    def render(self, messages, add_generation_prompt=False) -> str:
        """``<image>`` x images, ``<bos>``, the system and user text (joined by newlines), ``\\n``; then the answer
        and ``<eos>`` when the conversation holds one."""
        turns = [m["role"] for m in messages if m["role"] != "system"]
        if turns not in (["user"], ["user", "assistant"]):
            raise DataError(f"paligemma takes one question and its answer per record (no chat template), got turns {turns}")
        tok = self.tokenizer

        def texts(m):
            return [c["text"] for c in m["content"] if c["type"] == "text"]

        images = sum(c["type"] == "image" for m in messages for c in m["content"])
        question = "\n".join(t for m in messages if m["role"] != "assistant" for t in texts(m))
        out = self.processor.image_token * images + tok.bos_token + question + "\n"
        answer = [t for m in messages if m["role"] == "assistant" for t in texts(m)]
        return out + "".join(answer) + tok.eos_token if answer else out

    def num_image_tokens(self, image) -> int:
        return self.processor.image_seq_length

    def process_images(self, images):
        pixel_values = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values}, [self.processor.image_seq_length] * len(images)

    def extra_text_inputs(self, input_ids, labels=None):
        """``token_type_ids``: 1 on the suffix (labelled answer tokens), 0 on the prefix and in generation prompts."""
        types = torch.zeros_like(input_ids) if labels is None else (labels != -100).long()
        return {"token_type_ids": types}

    def image_features(self, image_inputs) -> torch.Tensor:
        return self.inner_model.get_image_features(image_inputs["pixel_values"])
