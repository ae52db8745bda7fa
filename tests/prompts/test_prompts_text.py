"""CoOp and CoCoOp prompts: context vectors swapped into the text tower at placeholder positions."""

from __future__ import annotations

import pytest
import torch

from tunevl.adapters.coop import word_vectors

CLASSES = ["red circle", "square", "two blue stars"]
INIT = "a photo of a"


def _as_text(position: str, name: str) -> str:
    """The hand-written prompt that a context initialised from INIT stands for."""
    return {"end": f"{INIT} {name}.", "middle": f"a photo {name} of a.", "front": f"{name} {INIT}."}[position]


@pytest.fixture(params=["clip", "siglip", "clip-openai-ids"])
def family_model(request, openai_layout_clip_path):
    return {"clip": "tiny-clip", "siglip": "tiny-siglip", "clip-openai-ids": openai_layout_clip_path}[request.param]


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_context_of_word_embeddings_reproduces_the_unprompted_features(family_model, position, dual_view):
    view = dual_view(family_model, coop={"init_text": INIT, "class_position": position})
    prompts = view.text_prompts
    prompts.bind_classnames(CLASSES)
    with torch.no_grad():
        got = prompts.encode(view, prompts.class_prompts(CLASSES))
        want = view.encode_texts(**view.tokenize([_as_text(position, c) for c in CLASSES]))
    assert torch.equal(got, want)
    # ... and a different context changes them: the swap is live.
    with torch.no_grad():
        prompts.ctx.add_(torch.randn_like(prompts.ctx))  # (a constant shift would vanish in the layer norms)
        assert not torch.allclose(prompts.encode(view, prompts.class_prompts(CLASSES)), want, atol=1e-3)


def test_class_specific_contexts_get_one_row_per_training_class(dual_view):
    view = dual_view("tiny-clip", coop={"init_text": INIT, "class_specific": True})
    prompts = view.text_prompts
    prompts.bind_classnames(CLASSES)
    assert prompts.ctx.shape == (3, 4, 64) and prompts.ctx.requires_grad
    with torch.no_grad():
        prompts.ctx[1] = word_vectors(view, "a picture of a", 4)  # only class 1's context changes
        got = prompts.encode(view, prompts.class_prompts(CLASSES[::-1]))  # any order of the training classes
        want = view.encode_texts(**view.tokenize([f"{INIT} two blue stars.", "a picture of a square.", f"{INIT} red circle."]))
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="only for the 3 training classes; no context for 'dog'"):
        prompts.class_prompts(["dog"])


def test_random_context_is_normal_with_the_given_std(dual_view):
    torch.manual_seed(0)
    view = dual_view("tiny-clip", coop={"num_tokens": 16, "init_std": 0.02})
    ctx = view.text_prompts.ctx
    assert ctx.shape == (16, 64) and abs(ctx.std().item() - 0.02) < 0.002 and abs(ctx.mean().item()) < 0.002


def test_placeholders_are_never_the_pooled_position(openai_layout_clip_path, dual_view):
    """OpenAI configs pool at input_ids.argmax(): an added placeholder token (id above eos) would be pooled."""
    view = dual_view(openai_layout_clip_path, coop={"num_tokens": 8})
    prompts = view.text_prompts
    prompts.bind_classnames(CLASSES)
    cp = prompts.class_prompts(CLASSES)
    eos = view.processor.tokenizer.eos_token_id
    pooled = view.text_pool_positions(cp.input_ids)
    assert (cp.input_ids.gather(1, pooled[:, None]) == eos).all()
    assert (cp.slots.gather(1, pooled[:, None]) == -1).all() and ((cp.slots >= 0).sum(1) == 8).all()
    assert cp.input_ids[cp.slots >= 0].max() < eos  # an existing word of the vocabulary
    # The check refuses a layout whose pooled position would be a context slot.
    prompts._prompt_cache.clear()
    prompts._pool_positions = lambda ids: torch.ones(ids.shape[0], dtype=torch.long)
    with pytest.raises(ValueError, match="would pool a prompt position"):
        prompts.class_prompts(CLASSES)


def test_siglip_prompts_are_padded_to_max_length_without_mask(dual_view):
    view = dual_view("tiny-siglip", coop={"num_tokens": 4})
    cp = view.text_prompts.class_prompts(CLASSES)
    assert cp.attention_mask is None and cp.input_ids.shape == (3, view.max_text_length)


def test_prompt_longer_than_the_text_tower_is_an_error(dual_view):
    view = dual_view("tiny-siglip", coop={"num_tokens": 30})
    with pytest.raises(ValueError, match="does not fit the text tower's 32 positions"):
        view.text_prompts.class_prompts(["red circle"])


def test_cocoop_shifts_every_context_vector_by_the_meta_net_of_the_image(dual_view):
    view = dual_view("tiny-clip", cocoop={"init_text": INIT})
    prompts = view.text_prompts
    net = prompts.meta_net
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear"]
    assert (net.linear1.in_features, net.linear1.out_features, net.linear2.out_features) == (64, 64 // 16, 64)
    prompts.bind_classnames(CLASSES)
    cp = prompts.class_prompts(CLASSES)
    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(3, 64), dim=-1)
    with torch.no_grad():
        batched = prompts.encode(view, cp, images)  # [B, C, D], one forward of B x C prompts
        assert batched.shape == (3, 3, 64)
        for b in range(3):  # the reference: each image's shifted context, alone
            shifted = prompts.ctx + net(images[b])
            with prompts.swapping(shifted[None], torch.zeros(3, dtype=torch.long), cp.slots):
                one = view.encode_texts(cp.input_ids, cp.attention_mask)
            torch.testing.assert_close(batched[b], one, rtol=0, atol=1e-6)
        # A zero meta-net output leaves CoOp's prompts (here: the words of INIT).
        net.linear2.weight.zero_()
        net.linear2.bias.zero_()
        want = view.encode_texts(**view.tokenize([f"{INIT} {c}." for c in CLASSES]))
        torch.testing.assert_close(prompts.encode(view, cp, images), want.expand(3, -1, -1), rtol=0, atol=1e-6)
