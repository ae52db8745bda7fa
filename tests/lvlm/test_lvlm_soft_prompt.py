"""Soft prompts: initialised from a handcrafted prompt they reproduce its logits exactly, at every position,
with attention mask and (multimodal) positions extended; gradients reach only the soft prompt."""

from __future__ import annotations

import pytest
import torch

from tunevl.adapters.soft_prompt import SoftPromptConfig, apply_soft_prompt
from tunevl.data.synthetic import render_shapes
from tunevl.models import ModelConfig, load_view

TEXT = "Answer with one word."


def _record(question="How many circles?"):
    image = render_shapes(2, "green", "circle", image_size=32, seed=3)
    return {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                         {"role": "assistant", "content": "two"}], "images": [image]}


def _handcrafted(view, record, position):
    """The same conversation with TEXT's tokens written where the soft prompt goes."""
    enc = view.encode(record["messages"], record["images"])
    ids = torch.tensor(enc["input_ids"])
    mask = torch.tensor(enc["soft_prompt_mask"])
    text_ids = torch.tensor(view.tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    ids[mask] = text_ids
    return ids, mask


@pytest.mark.parametrize("name", ["tiny-llava", "tiny-qwen2-vl"])
@pytest.mark.parametrize("position", ["after_image", "before_response", "start"])
def test_init_from_text_reproduces_the_prompt_logits(name, position):
    view = load_view(ModelConfig(name_or_path=name))
    prompt = apply_soft_prompt(view, {"init_text": TEXT, "position": position})
    n = len(view.tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    assert prompt.num_tokens == n and prompt.weight.requires_grad
    record = _record()
    two = view.collate([record, _record("What colour is it?")], {"messages"})
    assert two["soft_prompt_mask"].sum(1).tolist() == [n, n]
    batch = view.collate([record], {"messages"})
    soft_logits = view.logits(batch)

    ids, mask = _handcrafted(view, record, position)
    if position == "after_image":  # right after the image block, before the instruction
        before = ids[: mask.nonzero()[0, 0]].tolist()
        anchor = view.tokenizer(view.image_anchor, add_special_tokens=False)["input_ids"]
        assert before[-len(anchor):] == anchor
    plain = {k: v for k, v in batch.items() if torch.is_tensor(v)}
    plain["input_ids"] = ids[None]
    plain.update(view.extra_text_inputs(plain["input_ids"]))
    plain.pop("soft_prompt_mask")
    with torch.no_grad():
        want = view.base_model(**view.model_inputs(plain), use_cache=False).logits
    assert torch.equal(soft_logits.detach(), want)

    # Gradients reach the soft prompt (and nothing frozen).
    soft_logits.sum().backward()
    assert prompt.weight.grad is not None and prompt.weight.grad.abs().sum() > 0
    assert all(p.grad is None for n_, p in view.model.named_parameters() if "soft_prompt" not in n_)


def test_qwen_positions_extend_with_the_soft_prompt():
    view = load_view(ModelConfig(name_or_path="tiny-qwen2-vl"))
    apply_soft_prompt(view, {"num_tokens": 5, "position": "after_image"})
    batch = view.collate([_record()], {"messages"})
    pos, _ = view.inner_model.get_rope_index(batch["input_ids"], image_grid_thw=batch["image_grid_thw"],
                                             attention_mask=batch["attention_mask"], mm_token_type_ids=batch["mm_token_type_ids"])
    slots = batch["soft_prompt_mask"][0].nonzero()[:, 0]
    p = pos[:, 0, slots]  # text positions: the three rope axes agree and advance by one per slot
    assert torch.equal(p[0], p[1]) and torch.equal(p[1], p[2])
    assert torch.equal(p[0] - p[0, 0], torch.arange(5))


def test_soft_prompt_config_errors():
    with pytest.raises(ValueError, match="position"):
        SoftPromptConfig(num_tokens=2, position="middle")
    with pytest.raises(ValueError, match="num_tokens, init_text"):
        SoftPromptConfig()
