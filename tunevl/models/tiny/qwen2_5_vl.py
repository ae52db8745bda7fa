"""Tiny Qwen2.5-VL (``"tiny-qwen2.5-vl"``): a windowed-attention ViT with SwiGLU blocks and 2x2 patch merging
and a Qwen2 language model, about 0.2 M parameters; a 32 px image takes 4 tokens. It carries the chat
template of Qwen/Qwen2.5-VL-3B/7B-Instruct (default system message included)."""

from __future__ import annotations

from tunevl.models.tiny._lvlm import build_lvlm_tokenizer, seeded, set_generation_ids, text_config

# Qwen/Qwen2.5-VL-7B-Instruct's chat_template.json (the same as Qwen2-VL-Instruct's).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen2_5_vl(seed: int = 0):
    """A random tiny ``Qwen2_5_VLForConditionalGeneration`` and its image-only processor (32 px -> 4 tokens)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from tunevl.models.processors import Qwen2_5_VLImageOnlyProcessor

    tokenizer = build_lvlm_tokenizer(add_bos=False)
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8, spatial_merge_size=2,
            temporal_patch_size=2, in_channels=3, out_hidden_size=64, window_size=32, fullatt_block_indexes=[1],
        ),
        # mrope_section sums to head_dim / 2 = 64 / 4 / 2.
        text_config=text_config(tokenizer, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    model = seeded(lambda: Qwen2_5_VLForConditionalGeneration(config), seed)
    set_generation_ids(model, tokenizer)
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=16 * 16, max_pixels=32 * 32,
    )
    processor = Qwen2_5_VLImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                             chat_template=QWEN2_5_VL_CHAT_TEMPLATE)
    return model, processor
