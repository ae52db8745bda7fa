"""Tiny LLaVA and Qwen2-VL built offline (``"tiny-llava"``, ``"tiny-qwen2-vl"``).

Each build is deterministic: a byte-level BPE tokenizer trained in-process on a small corpus
(the synthetic-VQA vocabulary plus chat-template words), a PIL image processor (no torchvision),
a chat template shaped like the real family's, and randomly initialised weights (about 0.1 M
parameters). :func:`ensure_tiny` saves a build with ``save_pretrained`` into
``$TUNEVL_CACHE/<name>`` (default ``~/.cache/tunevl/<name>``) the first time it is asked for, so
the tiny models load through the same ``from_pretrained`` path as real checkpoints.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

__all__ = [
    "LLAVA_CHAT_TEMPLATE",
    "QWEN2_VL_CHAT_TEMPLATE",
    "TINY_LVLMS",
    "build_lvlm_tokenizer",
    "build_tiny_llava",
    "build_tiny_qwen2_vl",
    "cache_dir",
    "ensure_tiny",
    "resolve",
]

# Bumped whenever a build changes, so stale cached copies are rebuilt.
_HEAD_STD = 0.3
_PATCH_STD = 0.2
BUILD_VERSION = "3"

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

_SPECIAL = [
    "<pad>", "<s>", "</s>", "<image>",
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
]
_CORPUS = (
    "USER: ASSISTANT: user assistant system How many circles squares triangles diamonds stars are there? "
    "What colour is the circle square triangle shape? What shape is it? Answer with one word. "
    "one two three four five six red green blue yellow purple white orange cyan circle square triangle "
    "diamond star shapes the a is are in of image picture describe there this what how many colour color"
)


def build_lvlm_tokenizer(add_bos: bool):
    """Byte-level BPE with LLaVA's and Qwen's special tokens; ``add_bos`` prepends ``<s>`` like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=_SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([_CORPUS] * 20 + [_CORPUS.lower()] * 20, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>" if add_bos else None,
        eos_token="</s>" if add_bos else "<|im_end|>",
        pad_token="<pad>" if add_bos else "<|endoftext|>",
        padding_side="right",
        model_max_length=512,
    )


def _text_config(tokenizer, **extra) -> dict:
    return dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tokenizer), max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False, **extra,
    )


def _seeded(build, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build().float().eval()
        # With HF's 0.02 init, a frozen random head over a unit-RMS final norm caps every logit gap
        # near 1 and LoRA cannot lower the loss much; a wider head behaves like a trained one.
        torch.nn.init.normal_(model.lm_head.weight, std=_HEAD_STD)
        # Likewise a wider patch embedding lets pixel content, not position embeddings, dominate
        # the random vision tower's features, as in a trained tower.
        for name, module in model.named_modules():
            if name.endswith(("patch_embedding", "patch_embed.proj")):
                torch.nn.init.normal_(module.weight, std=_PATCH_STD)
    return model


def build_tiny_llava(seed: int = 0):
    """A random tiny ``LlavaForConditionalGeneration`` (CLIP tower, Llama LM) and its ``LlavaProcessor``."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = build_lvlm_tokenizer(add_bos=True)
    image_size, patch = 32, 8
    config = LlavaConfig(
        vision_config=dict(
            model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, image_size=image_size, patch_size=patch, projection_dim=32,
        ),
        text_config=dict(model_type="llama", **_text_config(tokenizer)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1, projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    model = _seeded(lambda: LlavaForConditionalGeneration(config), seed)
    _set_generation_ids(model, tokenizer)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor


def build_tiny_qwen2_vl(seed: int = 0):
    """A random tiny ``Qwen2VLForConditionalGeneration`` and its image-only processor (32 px -> 4 tokens)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from tunevl.models.qwen2_vl import Qwen2VLImageOnlyProcessor

    tokenizer = build_lvlm_tokenizer(add_bos=False)
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(
        vision_config=dict(
            depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=8, spatial_merge_size=2,
            temporal_patch_size=2, in_channels=3,
        ),
        # mrope_section sums to head_dim / 2 = 64 / 4 / 2.
        text_config=_text_config(tokenizer, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    model = _seeded(lambda: Qwen2VLForConditionalGeneration(config), seed)
    _set_generation_ids(model, tokenizer)
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=16 * 16, max_pixels=32 * 32,
    )
    processor = Qwen2VLImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2_VL_CHAT_TEMPLATE)
    return model, processor


def _set_generation_ids(model, tokenizer) -> None:
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id
    for cfg in (model.config, model.config.text_config):
        cfg.eos_token_id, cfg.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id


#: Built-in tiny LVLM names -> builder.
TINY_LVLMS = {"tiny-llava": build_tiny_llava, "tiny-qwen2-vl": build_tiny_qwen2_vl}


def cache_dir() -> Path:
    """Where built tiny models are kept: ``$TUNEVL_CACHE`` or ``~/.cache/tunevl``."""
    return Path(os.environ.get("TUNEVL_CACHE") or Path.home() / ".cache" / "tunevl")


def ensure_tiny(name: str) -> str:
    """Build and save the tiny model ``name`` once (atomically); return its folder."""
    if name not in TINY_LVLMS:
        raise ValueError(f"unknown tiny model {name!r}; known: {sorted(TINY_LVLMS)}")
    folder = cache_dir() / name
    marker = folder / "TUNEVL_BUILD"
    if marker.is_file() and marker.read_text().strip() == BUILD_VERSION:
        return str(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    model, processor = TINY_LVLMS[name]()
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "TUNEVL_BUILD").write_text(BUILD_VERSION + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    try:
        tmp.rename(folder)
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


def resolve(name_or_path: str) -> str:
    """A tiny LVLM name -> its built folder; anything else through ``tunevl.models.tiny.resolve_builtin``."""
    if name_or_path in TINY_LVLMS:
        return ensure_tiny(name_or_path)
    from tunevl.models.tiny import resolve_builtin

    return resolve_builtin(name_or_path)
