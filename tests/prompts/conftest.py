"""Tiny dual encoders for the prompt-learning tests, including a CLIP with OpenAI's token-id layout."""

from __future__ import annotations

import json

import pytest


def build_openai_layout_clip(seed: int = 0):
    """A tiny CLIP laid out like OpenAI's checkpoints: ``config.text_config.eos_token_id == 2`` (so transformers
    pools at ``input_ids.argmax()``), the end-of-text token has the largest id, and it also pads."""
    import torch
    from tokenizers import Tokenizer
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPProcessor,
        PreTrainedTokenizerFast,
    )

    from tunevl.models.tiny import (
        BOS,
        EOS,
        TINY_CLIP_SPEC,
        build_tiny_clip,
        build_tiny_tokenizer,
    )

    spec = json.loads(build_tiny_tokenizer().backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    last = max(vocab.values())
    old_eos = vocab[EOS]
    swap = {old_eos: last, last: old_eos}
    spec["model"]["vocab"] = {tok: swap.get(i, i) for tok, i in vocab.items()}
    for token in spec["added_tokens"]:
        token["id"] = swap.get(token["id"], token["id"])
    spec["post_processor"]["special_tokens"][EOS]["ids"] = [last]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token=BOS, eos_token=EOS,
                                        pad_token=EOS, padding_side="right", model_max_length=TINY_CLIP_SPEC["max_position_embeddings"])
    _, processor = build_tiny_clip(seed)
    s = TINY_CLIP_SPEC
    tower = {k: s[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")}
    config = CLIPConfig(
        text_config=dict(tower, vocab_size=len(tokenizer), max_position_embeddings=s["max_position_embeddings"],
                         bos_token_id=0, eos_token_id=2, pad_token_id=1),  # OpenAI's legacy ids
        vision_config=dict(tower, image_size=s["image_size"], patch_size=s["patch_size"]),
        projection_dim=s["projection_dim"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).float().eval()
    return model, CLIPProcessor(image_processor=processor.image_processor, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def openai_layout_clip_path(tmp_path_factory) -> str:
    from tunevl.models.tiny import save_tiny_clip

    path = tmp_path_factory.mktemp("models") / "tiny-clip-openai-ids"
    save_tiny_clip(path, *build_openai_layout_clip())
    return str(path)


@pytest.fixture
def dual_view():
    """``dual_view(name_or_path, **adapters) -> view``: a dual-encoder view with the given prompt adapters."""
    from tunevl.adapters.prompts import apply_prompt_adapters
    from tunevl.models import ModelConfig, load_view

    def make(name: str, **adapters):
        view = load_view(ModelConfig(name_or_path=name))
        apply_prompt_adapters(view, adapters)
        view.model.eval()
        return view

    return make
