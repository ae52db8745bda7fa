"""Idefics3 / SmolVLM family view over ``transformers.Idefics3ForConditionalGeneration`` (Laurençon et al. 2024,
https://arxiv.org/abs/2408.12637; SmolVLM, Marafioti et al. 2025, https://arxiv.org/abs/2504.05299).

An image is split into tiles plus a global view; one ``<image>`` placeholder expands into, per tile,
``<fake_token_around_image><row_i_col_j>`` and ``image_seq_len`` image tokens (a newline after each row),
then ``<fake_token_around_image><global-img>``, the global view's tokens and a closing
``<fake_token_around_image>``. Pixels are batched per record: ``[records, tiles, 3, H, W]`` with a
``pixel_attention_mask``; all-zero tiles are padding, which the model drops. Turns end with
``<end_of_utterance>``.
"""

from __future__ import annotations

import torch

from tunevl.models.lvlm import LvlmView

_LM = r"model\.text_model\.layers\.\d+"


class Idefics3View(LvlmView):
    """Idefics3 and SmolVLM: a SigLIP tower, a pixel-shuffle connector (the projector) and a Llama-style LM."""

    family = "idefics3"
    model_class = "Idefics3ForConditionalGeneration"
    lora_presets = {
        "language-attention": rf"{_LM}\.self_attn\.(q_proj|k_proj|v_proj|o_proj)",
        "language-all-linear": rf"{_LM}\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))",
        "vision-attention": r"model\.vision_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)",
    }
    lora_modules_to_save_presets = {"projector": ["connector"]}
    unquantized_modules = ("model.vision_model", "model.connector", "lm_head")
    image_anchor = "<image>"
    end_of_turn = "<end_of_utterance>"
    model_input_names = ("input_ids", "attention_mask", "pixel_values", "pixel_attention_mask")

    def vision_trunk(self):
        return [self.inner_model.vision_model]

    def projector(self):
        return self.inner_model.connector

    # ---- images -------------------------------------------------------------------------------
    def image_layout(self, image) -> tuple[int, int]:
        """``(rows, cols)`` of tiles (``(0, 0)``: no split), from the image size as the image processor splits."""
        width, height = image.size
        _, rows, cols = self.processor.image_processor.get_number_of_image_patches(height, width)
        return int(rows), int(cols)

    def num_image_tokens(self, image) -> int:
        rows, cols = self.image_layout(image)
        return self.processor.image_seq_len * (rows * cols + 1 if rows or cols else 1)

    def image_tokens(self, layout) -> list[int]:
        """The ids of Idefics3Processor's expansion of one ``<image>`` with ``layout`` = ``(rows, cols)``."""
        cache = self.__dict__.setdefault("_image_tokens", {})
        layout = tuple(int(x) for x in layout)
        if layout not in cache:
            text = self.processor.replace_image_token({"rows": [[layout[0]]], "cols": [[layout[1]]]}, 0)
            cache[layout] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return list(cache[layout])

    def _tiles(self, image):
        out = self.processor.image_processor([[image]], return_tensors="pt", return_row_col_info=True)
        return out["pixel_values"][0], out["pixel_attention_mask"][0], (int(out["rows"][0][0]), int(out["cols"][0][0]))

    def process_images(self, images):
        """One record per image (``[N, tiles, 3, H, W]``); see :meth:`batch_images` for records of several images."""
        inputs, layouts = self.batch_images([[im] for im in images])
        return inputs, [lay[0] for lay in layouts]

    def batch_images(self, images_per_record):
        """Each record's tiles stacked, zero-padded to the batch's largest tile count and size (as the processor pads)."""
        tiles = [[self._tiles(im) for im in images] for images in images_per_record]
        flat = [t for record in tiles for t in record]
        if not flat:
            return {}, [[] for _ in images_per_record]
        n = max(sum(p.shape[0] for p, _, _ in record) for record in tiles)
        h, w = max(p.shape[-2] for p, _, _ in flat), max(p.shape[-1] for p, _, _ in flat)
        pixels = torch.zeros(len(tiles), n, flat[0][0].shape[1], h, w, dtype=flat[0][0].dtype)
        masks = torch.zeros(len(tiles), n, h, w, dtype=flat[0][1].dtype)
        for b, record in enumerate(tiles):
            k = 0
            for p, m, _ in record:
                pixels[b, k : k + p.shape[0], :, : p.shape[-2], : p.shape[-1]] = p
                masks[b, k : k + p.shape[0], : m.shape[-2], : m.shape[-1]] = m
                k += p.shape[0]
        return {"pixel_values": pixels, "pixel_attention_mask": masks}, [[lay for _, _, lay in record] for record in tiles]

    def image_features(self, image_inputs) -> torch.Tensor:
        return self.inner_model.get_image_features(image_inputs["pixel_values"], image_inputs.get("pixel_attention_mask"))
