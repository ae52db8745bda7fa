"""Tiny LLaVA (``"tiny-llava"``): a CLIP tower, an MLP projector and a Llama language model, about 0.1 M
parameters, with LLaVA-1.5's processor settings and a template shaped like llava-hf/llava-1.5-7b-hf's (a
SentencePiece-style tokenizer like LLaVA-1.5's Llama one is a build option, for tests of in-context tokenisation)."""

from __future__ import annotations

from tunevl.models.tiny._lvlm import BASE_SPECIAL, build_lvlm_tokenizer, seeded, sentencepiece_tokenizer, set_generation_ids, text_config

# Shaped like llava-hf/llava-1.5-7b-hf's template; like it, it has no {% generation %} markers and
# ends an assistant turn with a space, not with the eos token.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for c in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for c in message['content'] | selectattr('type', 'equalto', 'text') %}{{ c['text'] + ' ' }}{% endfor %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_tiny_llava(seed: int = 0, vision: str = "clip", tokenizer: str = "bpe"):
    """A random tiny ``LlavaForConditionalGeneration`` and its ``LlavaProcessor``.

    ``vision="clip"``: LLaVA-1.5 (CLIP tower whose CLS token the "default" selection drops);
    ``vision="siglip"``: llava-interleave-qwen (a SigLIP tower without CLS, "full" selection,
    ``num_additional_image_tokens=0``). ``tokenizer="bpe"``: byte-level BPE (``tiny-llava``);
    ``"sentencepiece"``: shaped like LLaVA-1.5's Llama tokenizer.json (byte fallback, a ``▁`` before each
    stretch of text, so text tokenises differently alone and in context).
    """
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        SiglipImageProcessorPil,
    )

    if tokenizer == "sentencepiece":
        tokenizer = sentencepiece_tokenizer(BASE_SPECIAL + ["<unk>"], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>",
                                            dummy_prefix=True, add_bos=True)
    else:
        tokenizer = build_lvlm_tokenizer(add_bos=True)
    image_size, patch = 32, 8
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=image_size,
                 patch_size=patch)
    siglip = vision == "siglip"
    config = LlavaConfig(
        vision_config=dict(model_type="siglip_vision_model", **tower) if siglip else
        dict(model_type="clip_vision_model", projection_dim=32, **tower),
        text_config=dict(model_type="llama", **text_config(tokenizer)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="full" if siglip else "default", vision_feature_layer=-1, projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    model = seeded(lambda: LlavaForConditionalGeneration(config), seed)
    set_generation_ids(model, tokenizer)
    if siglip:
        image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    else:
        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
        vision_feature_select_strategy=config.vision_feature_select_strategy, num_additional_image_tokens=0 if siglip else 1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor
