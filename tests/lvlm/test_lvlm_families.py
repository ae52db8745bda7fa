"""Every generative family on the same checks: labels, prompt ids against the family's own processor and real
chat template, padded mixed batches, the soft-prompt identity, and LoRA presets on the real architectures."""

from __future__ import annotations

import pytest
import torch

from tunevl.adapters.lora import matching_modules, resolve_targets
from tunevl.adapters.soft_prompt import apply_soft_prompt
from tunevl.data.synthetic import render_shapes
from tunevl.models import GENERATIVE, ModelConfig, get_family, load_view
from tunevl.models.chat import normalise_messages

TWINS = {"llava": "tiny-llava", "qwen2_vl": "tiny-qwen2-vl", "qwen2_5_vl": "tiny-qwen2.5-vl", "idefics3": "tiny-idefics3",
         "paligemma": "tiny-paligemma"}
TEXT = "Answer with one word."


def test_every_generative_family_has_a_twin_here():
    assert set(TWINS) == set(GENERATIVE)


def _images():
    return [render_shapes(3, "red", "circle", image_size=32, seed=1), render_shapes(2, "blue", "square", image_size=48, seed=2)]


def _user(text, image=None):
    return {"role": "user", "content": ([{"type": "image", "image": image}] if image is not None else []) + [{"type": "text", "text": text}]}


def _assistant(text):
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _conversation(family):
    """A record and its answers: PaliGemma takes one question; the chat families a system message, two images
    and three turns (string contents too)."""
    a, b = _images()
    family = family.split("+")[0]
    if family == "paligemma":
        return {"messages": [_user("How many circles?", a), _assistant("three")], "images": [a]}, ["three"]
    messages = [{"role": "system", "content": "Be brief."}, _user("How many circles?", a), _assistant("three"),
                {"role": "user", "content": "Describe them."}, {"role": "assistant", "content": "They are red circles."},
                _user("And here?", b), _assistant("two")]
    return {"messages": messages, "images": [a, b]}, ["three", "They are red circles.", "two"]


def _spans(labels):
    spans, start = [], None
    for i, lab in enumerate(labels.tolist() + [-100]):
        if lab != -100 and start is None:
            start = i
        elif lab == -100 and start is not None:
            spans.append((start, i))
            start = None
    return spans


@pytest.fixture(scope="module", autouse=True)
def _sentencepiece_llava(tmp_path_factory):
    """LLaVA with a tokenizer shaped like LLaVA-1.5's Llama SentencePiece one (context-sensitive: see the last test)."""
    from tunevl.models.tiny.llava import build_tiny_llava

    path = tmp_path_factory.mktemp("llava-sentencepiece")
    model, processor = build_tiny_llava(tokenizer="sentencepiece")
    model.save_pretrained(path), processor.save_pretrained(path)
    TWINS_VARIANTS["llava+sentencepiece"] = str(path)


TWINS_VARIANTS: dict[str, str] = {}


@pytest.fixture(scope="module", params=[*TWINS, "llava+sentencepiece"])
def family(request):
    return request.param


def _view(family, **kwargs):
    return load_view(ModelConfig(name_or_path=TWINS.get(family) or TWINS_VARIANTS[family], **kwargs))


def test_labels_cover_each_answer_and_its_end_of_turn_token_once(family):
    view = _view(family)
    record, answers = _conversation(family)
    batch = view.collate([record], {"messages"})
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    assert torch.equal(labels[labels != -100], ids[labels != -100])
    spans = _spans(labels)
    assert len(spans) == len(answers)
    eot = view.end_of_turn_id
    for (a, b), answer in zip(spans, answers):
        assert ids[b - 1] == eot and (ids[a:b] == eot).sum() == 1
        assert view.tokenizer.decode(ids[a : b - 1]).strip() == answer
    n_image = sum(view.num_image_tokens(im) for im in record["images"])
    assert int((ids == view.image_token_id).sum()) == n_image


def _processor_inputs(view, family, messages, images, generation_prompt):
    proc = view.processor
    if family == "paligemma":  # no chat template: prefix text and suffix, as its model card shows
        question, answer = messages[0]["content"][-1]["text"], None if generation_prompt else messages[1]["content"][0]["text"]
        return proc(text=["<image>" + question], images=images, suffix=None if answer is None else [answer], return_tensors="pt")
    # Contents as item lists, as tunevl hands them to the template (SmolVLM's template drops string contents).
    messages = normalise_messages(messages, len(images))
    return proc.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True, return_dict=True,
                                    return_tensors="pt")


@pytest.mark.parametrize("generation_prompt", [True, False])
def test_ids_and_pixels_equal_the_family_processor_with_its_chat_template(family, generation_prompt):
    """The processor's apply_chat_template (PaliGemma: text + suffix) and image expansion, token for token."""
    view = _view(family)
    record, _ = _conversation(family)
    messages = record["messages"][: 2 if family == "paligemma" else 3]  # the system message, one question and its answer
    if generation_prompt:
        messages = messages[:-1]
    images = record["images"][:1]
    want = _processor_inputs(view, family, messages, images, generation_prompt)
    got = view.collate([{"messages": messages, "images": images}], {"messages"}, add_generation_prompt=generation_prompt)
    ids, labels = got["input_ids"][0].tolist(), got["labels"][0]
    ref = want["input_ids"][0].tolist()
    family = family.split("+")[0]
    if family == "llava" and not generation_prompt:  # LLaVA-1.5's template ends answers without eos; tunevl adds it
        (a, b), = _spans(labels)
        assert ids[b - 1] == view.tokenizer.eos_token_id
        ids = ids[: b - 1] + ids[b:]
    # Whitespace the template writes after the last answer (LLaVA's " ", Qwen's "\n") is not part of it.
    assert ids == ref[: len(ids)] and view.tokenizer.decode(ref[len(ids):]).strip() == ""
    assert generation_prompt or len(ref) - len(ids) <= 1
    if family == "paligemma":
        assert got["token_type_ids"][0].tolist() == want["token_type_ids"][0].tolist()
        if not generation_prompt:
            assert labels.tolist() == want["labels"][0].tolist()
    for key in ("pixel_values", "pixel_attention_mask", "image_grid_thw"):
        if key in want:
            torch.testing.assert_close(got[key].to(want[key].dtype), want[key], rtol=0, atol=0)


def test_right_padded_mixed_batches_equal_single_records(family):
    view = _view(family)
    record, _ = _conversation(family)
    a, b = _images()
    records = [
        record,
        {"messages": [{"role": "user", "content": "Say two."}, {"role": "assistant", "content": "two"}]},  # text only
        {"messages": [_user("What colour is it?"), _assistant("blue")], "images": [b]},
    ]
    with torch.no_grad():
        together = view.sequence_logps(view.collate(records, {"messages"}))
        alone = torch.cat([view.sequence_logps(view.collate([r], {"messages"})) for r in records])
    assert torch.isfinite(together).all()
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("position", ["after_image", "before_response", "start"])
def test_soft_prompt_from_text_reproduces_the_handcrafted_prompt(family, position):
    view = _view(family)
    prompt = apply_soft_prompt(view, {"init_text": TEXT, "position": position})
    record, _ = _conversation(family)
    record = {**record, "messages": record["messages"][: 2 if family == "paligemma" else 3], "images": record["images"][:1]}
    batch = view.collate([record], {"messages"})
    mask = batch["soft_prompt_mask"][0]
    assert int(mask.sum()) == prompt.num_tokens
    text_ids = torch.tensor(view.tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    plain = {k: v for k, v in batch.items() if torch.is_tensor(v) and k != "soft_prompt_mask"}
    plain["input_ids"] = batch["input_ids"].clone()
    plain["input_ids"][0, mask] = text_ids
    plain.update(view.extra_text_inputs(plain["input_ids"], plain["labels"]))
    with torch.no_grad():
        want = view.base_model(**view.model_inputs(plain), use_cache=False).logits
        assert torch.equal(view.logits(batch), want)
    # The text around the soft prompt tokenises as it does without one.
    view.soft_prompt = None
    without = view.collate([record], {"messages"})["input_ids"][0]
    assert batch["input_ids"][0][~mask].tolist() == without.tolist()


# ---- LoRA presets on the real architectures (default configs of each transformers class, on the meta device) ----
def _real_architecture(family):
    import transformers

    config_cls = {"llava": "LlavaConfig", "qwen2_vl": "Qwen2VLConfig", "qwen2_5_vl": "Qwen2_5_VLConfig",
                  "idefics3": "Idefics3Config", "paligemma": "PaliGemmaConfig"}[family]
    kwargs = {"text_config": {"model_type": "gemma2"}} if family == "paligemma" else {}  # PaliGemma 2
    config = getattr(transformers, config_cls)(**kwargs)
    with torch.device("meta"):
        return getattr(transformers, get_family(family).model_class)(config), config


@pytest.mark.parametrize("family", list(TWINS))
def test_lora_presets_hit_every_intended_module_of_the_real_architecture(family):
    view_cls = get_family(family)
    model, config = _real_architecture(family)
    layers = config.get_text_config().num_hidden_layers
    vision = config.vision_config
    vision_layers = getattr(vision, "num_hidden_layers", None) or vision.depth
    hits = {p: matching_modules(model, resolve_targets(p, view_cls.lora_presets)) for p in view_cls.lora_presets}
    assert len(hits["language-attention"]) == 4 * layers
    assert len(hits["language-all-linear"]) == 7 * layers
    per_block = 2 if family.startswith("qwen") else 4  # fused qkv + proj, or q, k, v, out
    assert len(hits["vision-attention"]) == per_block * vision_layers
    language = {n.split(".layers.")[0] for n in hits["language-all-linear"]}
    towers = {n.split(".layers.")[0].split(".blocks.")[0] for n in hits["vision-attention"]}
    assert len(language) == 1 and len(towers) == 1 and language != towers
    assert not any("lm_head" in n or "embed" in n for names in hits.values() for n in names)
    (projector,) = view_cls.lora_modules_to_save_presets["projector"]
    assert any(n.endswith("." + projector) for n, _ in model.named_modules())


def test_sentencepiece_llava_tokenises_like_llama():
    """That LLaVA's tokenizer is context-sensitive as Llama's: text tokenised alone gets a leading "▁" that it
    lacks after "<image>\\n", so cutting a prompt into separately tokenised pieces (the soft prompt's after_image
    split) would change it; the identity tests above pass only because pieces are cut from the whole."""
    tok = _view("llava+sentencepiece").tokenizer
    alone = tok("How many circles?", add_special_tokens=False)["input_ids"]
    in_context = tok("<image>\nHow many circles?", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(alone)[0].startswith("▁") and in_context[-len(alone):] != alone


def test_a_text_only_batch_runs_the_vision_tower_without_changing_the_loss(family):
    """The hidden image (what keeps ZeRO-3 ranks in step) goes through each family's hooks: the same loss as the
    batch without it, and a graph through the projector whose gradient is exactly zero."""
    from tunevl.adapters.lora import apply_lora
    from tunevl.objectives.next_token import NextToken

    view = _view(family)
    apply_lora(view, {"r": 2, "target_modules": ["language-attention", "projector"]})
    records = [{"messages": [{"role": "user", "content": "Say two."}, {"role": "assistant", "content": "two"}]},
               {"messages": [{"role": "user", "content": "Say three, please."}, {"role": "assistant", "content": "three"}]}]
    hidden = view.collate(records, {"messages"})
    plain = view.collate(records, {"messages"}, hidden_image=False)
    assert "pixel_values" in hidden and "pixel_values" not in plain
    assert int((hidden["input_ids"] == view.image_token_id).sum()) > 0 == int((plain["input_ids"] == view.image_token_id).sum())
    loss_hidden, loss_plain = NextToken()(view, hidden)["next_token"], NextToken()(view, plain)["next_token"]
    torch.testing.assert_close(loss_hidden, loss_plain, rtol=1e-6, atol=1e-6)
    loss_hidden.backward()
    projector = [p for p in view.projector().parameters() if p.requires_grad]
    assert projector and all(p.grad is not None and p.grad.abs().sum() == 0 for p in projector)
