"""LLaVA and Qwen2-VL views: assistant-only label masks, chunked log-probs through the view, LoRA presets."""

from __future__ import annotations

import pytest
import torch

from tunevl.adapters.lora import apply_lora
from tunevl.data.synthetic import render_shapes
from tunevl.models import ModelConfig, load_view

FAMILIES = {"tiny-llava": "llava", "tiny-qwen2-vl": "qwen2_vl"}
ANSWERS = ["three", "They are red circles.", "two"]


def _conversation():
    images = [render_shapes(3, "red", "circle", image_size=32, seed=1), render_shapes(2, "blue", "square", image_size=32, seed=2)]
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many circles?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": ANSWERS[0]}]},
        {"role": "user", "content": "Describe them."},
        {"role": "assistant", "content": ANSWERS[1]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And here?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": ANSWERS[2]}]},
    ]
    return {"messages": messages, "images": images}


def _spans(labels):
    spans, start = [], None
    for i, lab in enumerate(labels.tolist() + [-100]):
        if lab != -100 and start is None:
            start = i
        elif lab == -100 and start is not None:
            spans.append((start, i))
            start = None
    return spans


@pytest.mark.parametrize("name", list(FAMILIES))
def test_view_family_and_collate(name):
    view = load_view(ModelConfig(name_or_path=name))
    assert view.family == FAMILIES[name] and type(view).__name__.endswith("View")
    assert sum(p.numel() for p in view.model.parameters()) < 300_000
    assert not any(p.requires_grad for p in view.model.parameters())
    batch = view.collate([_conversation(), _conversation()], {"messages"})
    n_img = sum(view.num_image_tokens(im) for im in _conversation()["images"])
    assert int((batch["input_ids"][0] == view.image_token_id).sum()) == n_img > 2


@pytest.mark.parametrize("name", list(FAMILIES))
def test_labels_cover_exactly_the_assistant_tokens(name):
    view = load_view(ModelConfig(name_or_path=name))
    tok = view.tokenizer
    record = _conversation()
    batch = view.collate([record], {"messages"})
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    assert torch.equal(labels[labels != -100], ids[labels != -100])
    spans = _spans(labels)
    assert len(spans) == len(ANSWERS)
    for (a, b), answer in zip(spans, ANSWERS):
        # Exactly the answer's tokens plus the end-of-turn token, nothing of the template around them.
        assert ids[b - 1].item() == tok.eos_token_id
        assert tok.decode(ids[a : b - 1]).strip() == answer
        assert ids[a : b - 1].tolist() == tok(tok.decode(ids[a : b - 1]), add_special_tokens=False)["input_ids"]
    # The unlabelled prompt before the first answer is exactly what the HF processor makes of the generation prompt.
    prompt = view.render(record["messages"][:1], add_generation_prompt=True)
    ref = view.processor(text=[prompt], images=record["images"][:1], return_tensors="pt")["input_ids"][0]
    assert ids[: spans[0][0]].tolist() == ref.tolist()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_sequence_logps_through_view_equals_naive(name):
    view = load_view(ModelConfig(name_or_path=name))
    apply_lora(view, {"r": 4, "lora_alpha": 8, "target_modules": ["language-attention", "projector"]})
    with torch.no_grad():  # non-zero LoRA so gradients reach lora_A too
        for n, p in view.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    record = _conversation()
    batch = view.collate([record, {**record, "messages": record["messages"][:2], "images": record["images"][:1]}], {"messages"})
    params = [p for p in view.model.parameters() if p.requires_grad]
    weights = torch.tensor([0.7, -1.3])

    got = view.sequence_logps(batch, chunk_size=5)
    got_grads = torch.autograd.grad((got * weights).sum(), params)
    logits = view.base_model(**view.model_inputs(batch), use_cache=False).logits.double()  # the naive path
    logp = logits.log_softmax(-1)[:, :-1]
    targets = batch["labels"][:, 1:]
    want = (logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0] * (targets != -100)).sum(1)
    want_grads = torch.autograd.grad((want * weights.double()).sum(), params)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
    assert len(params) > 4 and any(g.abs().sum() > 0 for g in want_grads)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g.double(), w.double(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_lora_presets_and_combinations(name):
    view = load_view(ModelConfig(name_or_path=name))
    from tunevl.adapters.lora import matching_modules, resolve_targets

    hits = {p: matching_modules(view.base_model, resolve_targets(p, view.lora_presets)) for p in view.lora_presets}
    assert all(hits.values()), hits
    assert all("language_model" in n and n.split(".")[-1] in ("q_proj", "k_proj", "v_proj", "o_proj") for n in hits["language-attention"])
    assert len(hits["language-all-linear"]) == len(hits["language-attention"]) // 4 * 7
    assert all(("vision_tower" in n or "visual" in n) for n in hits["vision-attention"])
    apply_lora(view, {"r": 2, "target_modules": ["language-attention", "vision-attention", "projector"]})
    names = [n for n, p in view.model.named_parameters() if p.requires_grad]
    projector = view.lora_modules_to_save_presets["projector"][0]
    assert any(f"{projector}.modules_to_save" in n for n in names)
    assert {n for n in names if "lora_A" in n} == {f"base_model.model.{m}.lora_A.default.weight" for m in hits["language-attention"] + hits["vision-attention"]}


@pytest.mark.parametrize("targets", ["nothing-like-this", ["language-attention", r"no\.such\.module"], ["projector"]])
def test_lora_target_matching_nothing_is_an_error(targets):
    view = load_view(ModelConfig(name_or_path="tiny-llava"))
    with pytest.raises(ValueError, match="matches no module|only whole-module presets|matches nothing"):
        apply_lora(view, {"r": 2, "target_modules": targets})


@pytest.mark.parametrize("name", list(FAMILIES))
def test_text_only_batch_runs_the_vision_tower_without_changing_the_loss(name):
    from tunevl.objectives.next_token import NextToken

    view = load_view(ModelConfig(name_or_path=name))
    apply_lora(view, {"r": 2, "target_modules": ["language-attention", "projector"]})
    records = [{"messages": [{"role": "user", "content": "Say two."}, {"role": "assistant", "content": "two"}]}] * 2
    with_image = view.collate(records, {"messages"})
    plain = view.collate(records, {"messages"}, hidden_image=False)
    assert "pixel_values" in with_image and "pixel_values" not in plain
    loss_hidden, loss_plain = NextToken()(view, with_image)["next_token"], NextToken()(view, plain)["next_token"]
    torch.testing.assert_close(loss_hidden, loss_plain, rtol=1e-6, atol=1e-6)
    loss_hidden.backward()
    projector = [p for p in view.projector().parameters() if p.requires_grad]
    assert projector and all(p.grad is not None and p.grad.abs().sum() == 0 for p in projector)


def test_llava_with_a_siglip_tower_counts_image_tokens_as_the_processor(tmp_path):
    """llava-interleave-qwen style (model_type llava, SigLIP tower: no CLS, "full" selection,
    num_additional_image_tokens=0): the counts match the processor's and the model's features."""
    from tunevl.models.tiny.llava import build_tiny_llava

    model, processor = build_tiny_llava(vision="siglip")
    model.save_pretrained(tmp_path), processor.save_pretrained(tmp_path)
    view = load_view(ModelConfig(name_or_path=str(tmp_path)))
    assert view.family == "llava" and view.base_model.config.vision_config.model_type == "siglip_vision_model"
    record = _conversation()
    assert view.num_image_tokens(record["images"][0]) == 16  # (32 / 8)^2 patches, nothing added or dropped
    prompt = view.render(record["messages"][:1], add_generation_prompt=True)
    ref = processor(text=[prompt], images=record["images"][:1], return_tensors="pt")["input_ids"][0]
    batch = view.collate([record], {"messages"})
    assert batch["input_ids"][0, : len(ref)].tolist() == ref.tolist()
    with torch.no_grad():  # crashed on the image-token check before
        assert torch.isfinite(view.sequence_logps(batch)).all()
