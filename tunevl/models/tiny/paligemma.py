"""Tiny PaliGemma 2 (``"tiny-paligemma"``): a SigLIP tower, a linear projector and a Gemma 2 language model
with tied embeddings, about 0.2 M parameters; a 32 px image takes 16 tokens. Like google/paligemma2-*, it
has no chat template: the prompt is ``<image>``... ``<bos>`` prefix ``\\n`` and the answer (suffix) ends
with ``<eos>``; the tokenizer is a SentencePiece-style BPE (``▁`` for spaces, no dummy prefix, as Gemma's),
and the processor adds the 1,152 ``<loc>``/``<seg>`` tokens.
"""

from __future__ import annotations

from tunevl.models.tiny._lvlm import seeded, sentencepiece_tokenizer, set_generation_ids

_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]


def build_tiny_paligemma(seed: int = 0):
    """A random tiny ``PaliGemmaForConditionalGeneration`` (PaliGemma 2: Gemma 2 text model) and its processor."""
    from tokenizers import processors
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor, SiglipImageProcessorPil

    tokenizer = sentencepiece_tokenizer(_SPECIAL, bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>")
    # Prompt and answer are a pair; the answer's tokens have token type 1 (PaliGemma's suffix).
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1")
    image_processor = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    image_processor.image_seq_length = 16
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)  # adds <loc>/<seg> tokens
    vocab = len(processor.tokenizer)
    config = PaliGemmaConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8, projection_dim=64),
        text_config=dict(
            model_type="gemma2", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=vocab, max_position_embeddings=512, sliding_window=64,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vocab_size=vocab, projection_dim=64,
        hidden_size=64, tie_word_embeddings=True,
    )
    model = seeded(lambda: PaliGemmaForConditionalGeneration(config), seed)
    set_generation_ids(model, tokenizer)
    return model, processor
