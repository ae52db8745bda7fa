"""What the tiny generative LVLMs share: a byte-level BPE trained in-process on a small corpus (the
synthetic-VQA vocabulary plus chat-template words), the tiny language-model sizes, and seeded weights.

Each family's builder (``tunevl/models/tiny/<family>.py``) adds its own special tokens, config, image
processor and the real checkpoint's chat template.
"""

from __future__ import annotations

import torch

# Bumped whenever a build changes, so stale cached copies are rebuilt.
BUILD_VERSION = "3"
_HEAD_STD = 0.3
_PATCH_STD = 0.2

#: Special tokens of the LLaVA and Qwen families (kept first, so their ids stay put across families).
BASE_SPECIAL = [
    "<pad>", "<s>", "</s>", "<image>",
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
]
_CORPUS = (
    "USER: ASSISTANT: user assistant system How many circles squares triangles diamonds stars are there? "
    "What colour is the circle square triangle shape? What shape is it? Answer with one word. "
    "one two three four five six red green blue yellow purple white orange cyan circle square triangle "
    "diamond star shapes the a is are in of image picture describe there this what how many colour color"
)


def bpe_tokenizer(special: list[str], *, bos: str | None, eos: str, pad: str, add_bos: bool = False, extra_text: str = ""):
    """Byte-level BPE (vocabulary 512) with ``special`` tokens; ``add_bos`` prepends ``bos`` like Llama's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    corpus = _CORPUS + extra_text
    tok.train_from_iterator([corpus] * 20 + [corpus.lower()] * 20, trainer)
    if add_bos:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, padding_side="right", model_max_length=512,
    )


def sentencepiece_tokenizer(special: list[str], *, bos: str, eos: str, pad: str, unk: str | None = None,
                            dummy_prefix: bool = False, add_bos: bool = False):
    """A SentencePiece-style byte-fallback BPE (words start with ``▁``), shaped like Gemma's tokenizer.json
    (``dummy_prefix=False``) or Llama's legacy one (``dummy_prefix=True``: a ``▁`` before every stretch of text
    between special tokens, so ``"How many"`` alone is ``▁How ▁many`` but ``How ▁many`` after ``"<image>\n"``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token=unk, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always" if dummy_prefix else "never")
    decode = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence([*decode, decoders.Strip(" ", 1, 0)] if dummy_prefix else decode)
    trainer = trainers.BpeTrainer(vocab_size=768, special_tokens=special + [f"<0x{b:02X}>" for b in range(256)],
                                  initial_alphabet=["▁"], show_progress=False)
    tok.train_from_iterator([_CORPUS] * 20 + [_CORPUS.lower()] * 20, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B:1",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk,
                                   padding_side="right", model_max_length=512)


def build_lvlm_tokenizer(add_bos: bool):
    """The LLaVA (``add_bos``: ``<s>``, ``</s>``) or Qwen (``<|im_end|>``) flavour of the tiny BPE."""
    if add_bos:
        return bpe_tokenizer(BASE_SPECIAL, bos="<s>", eos="</s>", pad="<pad>", add_bos=True)
    return bpe_tokenizer(BASE_SPECIAL, bos=None, eos="<|im_end|>", pad="<|endoftext|>")


def text_config(tokenizer, **extra) -> dict:
    """The tiny language model: hidden 64, 2 layers, 4 heads (2 key-value heads)."""
    return dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tokenizer), max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False, **extra,
    )


def seeded(build, seed: int):
    """``build()`` under a fixed seed (the global RNG untouched), float32, eval mode, with a wider head and patch
    embedding."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build().float().eval()
        # With HF's 0.02 init, a frozen random head over a unit-RMS final norm caps every logit gap
        # near 1 and LoRA cannot lower the loss much; a wider head behaves like a trained one.
        torch.nn.init.normal_(model.get_output_embeddings().weight, std=_HEAD_STD)
        # Likewise a wider patch embedding lets pixel content, not position embeddings, dominate
        # the random vision tower's features, as in a trained tower.
        for name, module in model.named_modules():
            if name.endswith(("patch_embedding", "patch_embed.proj")):
                torch.nn.init.normal_(module.weight, std=_PATCH_STD)
    return model


def set_generation_ids(model, tokenizer) -> None:
    """eos/pad/bos of the generation config and the (text) configs from the tokenizer."""
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id
    for cfg in (model.config, model.config.get_text_config()):
        cfg.eos_token_id = tokenizer.eos_token_id
        if "pad_token_id" not in vars(type(cfg)):  # Idefics3Config's is a deprecated alias of its text config's
            cfg.pad_token_id = tokenizer.pad_token_id
