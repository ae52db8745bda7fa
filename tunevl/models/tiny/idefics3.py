"""Tiny Idefics3 / SmolVLM (``"tiny-idefics3"``): a SigLIP-style tower, a pixel-shuffle connector and a Llama
language model, about 0.2 M parameters. Images are split into 32 px tiles plus a global view (a 32 px
image: 2 x 2 tiles + 1, each 4 image tokens), tagged ``<row_i_col_j>`` / ``<global-img>`` between
``<fake_token_around_image>`` tokens, as HuggingFaceTB/SmolVLM-* do with 512 px tiles. It carries the
chat template of HuggingFaceTB/SmolVLM-256M-Instruct and ends turns with ``<end_of_utterance>``.
"""

from __future__ import annotations

from tunevl.models.tiny._lvlm import bpe_tokenizer, seeded, set_generation_ids, text_config

# HuggingFaceTB/SmolVLM-256M-Instruct's chat template (Idefics3-8B-Llama3's starts with <|begin_of_text|>).
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
_SPECIAL = ["<|im_start|>", "<end_of_utterance>", "<|im_end|>", "<|endoftext|>", "<image>", "<fake_token_around_image>",
            "<global-img>", *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]]


def build_tiny_idefics3(seed: int = 0):
    """A random tiny ``Idefics3ForConditionalGeneration`` and its ``Idefics3Processor``."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor

    # SmolVLM's tokenizer: bos <|im_start|>, eos <end_of_utterance>, pad <|im_end|>; it adds no bos itself.
    tokenizer = bpe_tokenizer(_SPECIAL, bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>", extra_text=" User: Assistant:")
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                           patch_size=8),
        text_config=dict(model_type="llama", **text_config(tokenizer)),
        scale_factor=2, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=False,
    )
    model = seeded(lambda: Idefics3ForConditionalGeneration(config), seed)
    set_generation_ids(model, tokenizer)
    image_processor = Idefics3ImageProcessorPil(do_image_splitting=True, size={"longest_edge": 64},
                                                max_image_size={"longest_edge": 32})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                                  chat_template=IDEFICS3_CHAT_TEMPLATE)
    return model, processor
