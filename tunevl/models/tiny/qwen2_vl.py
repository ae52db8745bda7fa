"""Tiny Qwen2-VL (``"tiny-qwen2-vl"``): a ViT with 2x2 patch merging and a Qwen2 language model, about
0.1 M parameters; a 32 px image takes 4 tokens."""

from __future__ import annotations

from tunevl.models.tiny._lvlm import build_lvlm_tokenizer, seeded, set_generation_ids, text_config

# Shaped like Qwen/Qwen2-VL-2B-Instruct's template (without its default system message).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen2_vl(seed: int = 0):
    """A random tiny ``Qwen2VLForConditionalGeneration`` and its image-only processor (32 px -> 4 tokens)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from tunevl.models.processors import Qwen2VLImageOnlyProcessor

    tokenizer = build_lvlm_tokenizer(add_bos=False)
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(
        vision_config=dict(
            depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=8, spatial_merge_size=2,
            temporal_patch_size=2, in_channels=3,
        ),
        # mrope_section sums to head_dim / 2 = 64 / 4 / 2.
        text_config=text_config(tokenizer, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    model = seeded(lambda: Qwen2VLForConditionalGeneration(config), seed)
    set_generation_ids(model, tokenizer)
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=16 * 16, max_pixels=32 * 32,
    )
    processor = Qwen2VLImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2_VL_CHAT_TEMPLATE)
    return model, processor
