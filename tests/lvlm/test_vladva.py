"""VladVA's two towers over one LVLM (tunevl.models.embedder), its soft prompts and its two objectives, on the tiny
LLaVA and Qwen2-VL: pooling per padding side, a text tower that never sees an image, soft prompts that start as
the handcrafted prompts, losses against references, graph-connected zeros for records without the field."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunevl.adapters.embedding_prompts import EmbeddingPromptsConfig, apply_embedding_prompts
from tunevl.adapters.lora import apply_lora
from tunevl.data.synthetic import render_shapes
from tunevl.data.synthetic_captions import SyntheticCaptions
from tunevl.inference import Embedder
from tunevl.losses.sequence import IGNORE_INDEX
from tunevl.models import ModelConfig, load_view
from tunevl.models import embedder as E
from tunevl.models.lvlm import SoftPrompt
from tunevl.objectives.vladva import VladvaCaptions, VladvaContrastive

FAMILIES = ["tiny-llava", "tiny-qwen2-vl"]
TEXTS = ["red", "three green squares", "one blue circle on a dark background, small"]


def _view(name, lora=False, **prompts):
    view = load_view(ModelConfig(name_or_path=name))
    if lora:
        apply_lora(view, {"r": 4, "lora_alpha": 8, "target_modules": "language-all-linear", "init_lora_weights": False})
    apply_embedding_prompts(view, prompts)
    return view


def _images():
    # Different sizes: Qwen2-VL gives them different token counts, so image batches are padded too.
    return [render_shapes(2, "red", "circle", image_size=32, seed=1), render_shapes(1, "blue", "square", image_size=32, seed=2).resize((32, 16)),
            render_shapes(3, "green", "triangle", image_size=32, seed=3)]


def _handcrafted(view):
    """The same view with its soft prompts set aside (the handcrafted prompts' own tokens)."""
    saved, view.soft_prompts = view.soft_prompts, {}
    return saved


@pytest.mark.parametrize("name", FAMILIES)
def test_soft_prompts_replace_the_prompts_and_start_as_them(name):
    view = _view(name)
    assert sorted(view.soft_prompts) == ["image", "text"] and view.soft_prompt is None
    assert all(p.weight.requires_grad for p in view.soft_prompts.values())
    emb = Embedder(view, batch_size=2)
    images = _images()
    batch = E.image_batch(view, [[im] for im in images])
    n_image = view.soft_prompts["image"].num_tokens
    assert n_image == len(E.prompt_token_ids(view, "image")) and batch["soft_prompt_mask"].sum(1).tolist() == [n_image] * 3
    # The slots sit after the image and replace the prompt: its words are gone from the token ids.
    first_slot = batch["soft_prompt_mask"][0].nonzero()[0, 0]
    assert (batch["input_ids"][0, :first_slot] == view.image_token_id).any()
    assert "Summary" not in view.tokenizer.decode(batch["input_ids"][0])
    text = E.text_batch(view, TEXTS)
    assert "Summary" not in view.tokenizer.decode(text["input_ids"][0]) and "red" in view.tokenizer.decode(text["input_ids"][0])
    soft_images, soft_texts = emb.embed_images(images), emb.embed_texts(TEXTS)

    saved = _handcrafted(view)
    hand = E.image_batch(view, [[im] for im in images])
    assert "Summary above image in one word:" in view.tokenizer.decode(hand["input_ids"][0]) and not hand["soft_prompt_mask"].any()
    torch.testing.assert_close(soft_images, emb.embed_images(images), rtol=0, atol=1e-6)
    torch.testing.assert_close(soft_texts, emb.embed_texts(TEXTS), rtol=0, atol=1e-6)

    # Trained soft prompts change the embeddings (each tower only through its own prompt).
    view.soft_prompts = saved
    with torch.no_grad():
        saved["image"].weight.add_(0.5 * torch.randn_like(saved["image"].weight))
    assert not torch.allclose(emb.embed_images(images), soft_images, atol=1e-3)
    torch.testing.assert_close(emb.embed_texts(TEXTS), soft_texts, rtol=0, atol=1e-6)


def test_soft_prompt_length_and_fixed_prompts():
    view = _view("tiny-llava", num_tokens=3)
    assert [p.num_tokens for p in view.soft_prompts.values()] == [3, 3]
    ids = E.prompt_token_ids(view, "text")
    embed = view.inner_model.get_input_embeddings()
    torch.testing.assert_close(view.soft_prompts["text"].weight.detach(), embed(torch.tensor(ids[:3])).detach())
    fixed = _view("tiny-llava", soft=False)
    assert fixed.soft_prompts == {} and fixed.extra_trainables() == {}
    assert "Summary above sentence in one word:" in fixed.tokenizer.decode(E.text_batch(fixed, ["red"])["input_ids"][0])
    with pytest.raises(ValueError, match="num_tokens"):
        EmbeddingPromptsConfig(num_tokens=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_pooling_takes_the_last_token_whatever_the_padding(name):
    view = _view(name, lora=True)
    images = _images()
    for build, embed, items in ((E.text_batch, E.embed_text_batch, TEXTS),
                                (E.image_batch, E.embed_image_batch, [[im] for im in images])):
        left, right = build(view, items, padding_side="left"), build(view, items, padding_side="right")
        lengths = right["attention_mask"].sum(1)
        assert len(set(lengths.tolist())) > 1 or build is E.image_batch and name == "tiny-llava"
        # The pooled position is the last real token: the sequence's end (left) or its length - 1 (right).
        hidden = torch.randn(len(items), left["input_ids"].shape[1], 5)
        torch.testing.assert_close(E.last_token(hidden, left["attention_mask"]), hidden[:, -1])
        torch.testing.assert_close(E.last_token(hidden, right["attention_mask"]), hidden[torch.arange(len(items)), lengths - 1])
        with torch.no_grad():
            got_left, got_right = embed(view, left), embed(view, right)
            alone = torch.cat([embed(view, build(view, [item])) for item in items])
        torch.testing.assert_close(got_left, alone, rtol=0, atol=2e-5)
        torch.testing.assert_close(got_right, alone, rtol=0, atol=2e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_text_tower_never_sees_an_image(name):
    view = _view(name)
    calls = {"vision": 0, "full": 0}
    vision = view.vision_trunk()[0]
    vision.register_forward_hook(lambda *a: calls.__setitem__("vision", calls["vision"] + 1))
    view.inner_model.register_forward_hook(lambda *a: calls.__setitem__("full", calls["full"] + 1))
    batch = E.text_batch(view, TEXTS)
    assert set(batch) == {"input_ids", "attention_mask", "soft_prompt_mask"}
    assert not (batch["input_ids"] == view.image_token_id).any()
    with torch.no_grad():
        before = E.embed_text_batch(view, batch)
        for p in vision.parameters():  # a different vision tower cannot change a text embedding
            p.add_(torch.randn_like(p))
        after = E.embed_text_batch(view, batch)
    assert calls == {"vision": 0, "full": 0}  # the language model alone ran
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    with torch.no_grad():
        E.embed_image_batch(view, E.image_batch(view, [[_images()[0]]]))
    assert calls["vision"] >= 1 and calls["full"] == 1


def _records():
    ds = SyntheticCaptions(6, split="train", image_size=32, max_count=3, layout="either")
    records = [ds[i] for i in range(6)]
    assert {("text" in r, "long_text" in r) for r in records} == {(True, False), (False, True)}
    return records


def test_contrastive_objective_matches_a_reference_and_covers_records_with_text():
    view = _view("tiny-qwen2-vl", lora=True)
    records = _records()
    objective = VladvaContrastive(temperature=0.1)
    part = objective.collate(view, records)
    with_text = [r for r in records if "text" in r]
    assert part["vladva_pairs"] == len(with_text) and objective.counts(part) == {}
    out = objective.encode(view, part)
    loss = objective.loss(**out)["contrastive"]
    emb = Embedder(view)
    img = emb.embed_images([r["image"] for r in with_text]).double()
    txt = emb.embed_texts([r["text"] for r in with_text]).double()
    logits = img @ txt.T / 0.1
    labels = torch.arange(len(with_text))
    want = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-6)
    loss.backward()
    trained = [p for p in view.model.parameters() if p.requires_grad]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in view.soft_prompts.values() for p in [p.weight])
    assert sum(p.grad.abs().sum() for p in trained if p.grad is not None) > 0


def test_captions_objective_matches_a_reference_and_covers_records_with_long_text():
    view = _view("tiny-llava", lora=True)
    records = _records()
    objective = VladvaCaptions()
    part = objective.collate(view, records)
    batch = part["vladva_captions"]
    long = [r for r in records if "long_text" in r]
    assert batch["input_ids"].shape[0] == len(long)
    # Labelled: the caption and the end of the turn, nothing of the image or the prompt.
    labels = batch["labels"][0]
    answer = view.tokenizer.decode(labels[labels != IGNORE_INDEX])
    assert answer.strip() == long[0]["long_text"] + view.tokenizer.eos_token and (batch["soft_prompt_mask"][0] & (labels != IGNORE_INDEX)).sum() == 0
    assert int(objective.counts(part)["next_token"]) == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    loss = objective(view, part)["next_token"]
    with view.soft_prompt_mask(batch["soft_prompt_mask"], "image"):
        logits = view.base_model(**view.model_inputs(batch)).logits
    want = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert view.soft_prompts["image"].weight.grad.abs().sum() > 0 and view.soft_prompts["text"].weight.grad is None


@pytest.mark.parametrize("objective", [VladvaContrastive(), VladvaCaptions()], ids=["contrastive", "captions"])
def test_a_batch_without_the_field_still_runs_the_graph(objective):
    view = _view("tiny-llava", lora=True)
    field = "text" if isinstance(objective, VladvaContrastive) else "long_text"
    records = [{k: v for k, v in r.items() if k != field} for r in _records()]
    part = objective.collate(view, records)
    assert all(v == 0 for v in objective.counts(part).values())
    loss = sum(objective(view, part).values())
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    lora = [p for n, p in view.model.named_parameters() if "lora_" in n]
    assert lora and all(p.grad is not None and p.grad.abs().sum() == 0 for p in lora)  # in the graph, zero gradient


def test_named_soft_prompts_load_beside_the_single_one():
    view = load_view(ModelConfig(name_or_path="tiny-llava"))
    single, image = torch.randn(4, 64), torch.randn(5, 64)
    view.load_extras({"soft_prompt.after_image": single, "soft_prompt.image": image})
    assert view.soft_prompt.position == "after_image" and torch.equal(view.soft_prompt.weight.detach(), single)
    assert torch.equal(view.soft_prompts["image"].weight.detach(), image)
    assert sorted(view.extra_trainables()) == ["soft_prompt.after_image", "soft_prompt.image"]
    assert len(view.external_parameters()) == 2
    with pytest.raises(ValueError, match="named soft prompt"):
        view.attach_soft_prompt(SoftPrompt(2, 64), name="start")
    with pytest.raises(KeyError, match="no soft prompt named"):
        with view.soft_prompt_mask(None, "text"):
            pass
