"""DPO and S-VCO objectives on the tiny LLaVA and Qwen2-VL: log-probs equal the view's own scoring of each
conversation, the no-image sequences carry no image tokens, the reference is the base model (adapters and soft
prompt off, touching no trainable parameter, switched back on even when it raises), pair counts normalise a
step however it is split, and precomputed reference log-probs are cached under a key of everything they depend on."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from tunevl.adapters.lora import apply_lora
from tunevl.adapters.soft_prompt import apply_soft_prompt
from tunevl.data.preference import PreferenceSource, dpo_conversations, svco_conversations
from tunevl.data.synthetic_contrast import SyntheticContrast, write_mvc
from tunevl.losses import dpo_loss, svco_loss
from tunevl.losses.preference import SVCO_KEYS
from tunevl.models import ModelConfig, load_view
from tunevl.objectives.preference import DPO, SVCO
from tunevl.objectives.reference import (
    prepare_reference_logps,
    reference_cache_key,
    reference_key_inputs,
    reference_model,
)
from tunevl.train.distributed import DistInfo

FAMILIES = ["tiny-llava", "tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-idefics3", "tiny-paligemma"]


def _adapted(name: str, soft: bool = True):
    """A tiny view with LoRA (B randomised, so the adapter changes the output) and a soft prompt."""
    torch.manual_seed(0)
    view = load_view(ModelConfig(name_or_path=name))
    apply_lora(view, {"r": 4, "lora_alpha": 8, "target_modules": ["language-attention", "projector"]})
    if soft:
        apply_soft_prompt(view, {"num_tokens": 3, "position": "after_image"})
    with torch.no_grad():
        for n, p in view.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    return view


def _records(n=3, **kw):
    ds = SyntheticContrast(n, image_size=32, **kw)
    return [ds[i] for i in range(n)]


def _score(view, conversations):
    """Each conversation scored alone through the view's own collate + sequence_logps."""
    with torch.no_grad():
        return torch.cat([view.sequence_logps(view.collate([c], {"messages"})) for c in conversations])


@pytest.mark.parametrize("name", FAMILIES)
def test_objective_logps_are_the_views_scores_of_each_conversation(name):
    view = _adapted(name)
    records = _records()
    svco, dpo = SVCO(), DPO(beta=0.3)

    part = svco.collate(view, records)
    assert part["svco_pairs"] == 3 and svco.counts(part) == {"svco": 3}
    without = part["svco_without_image"]
    assert not (without["input_ids"] == view.image_token_id).any() and "pixel_values" not in without
    assert (part["svco_with_image"]["input_ids"] == view.image_token_id).any()
    out = svco.encode(view, part)
    convs = [svco_conversations(r) for r in records]
    for key in SVCO_KEYS:
        want = _score(view, [{**c[0], **c[1]}[key] for c in convs])
        torch.testing.assert_close(out["policy"][key].detach(), want, rtol=0, atol=1e-5)
    torch.testing.assert_close(svco.loss(**out)["svco"], svco_loss(out["policy"], out["reference"]))

    part = dpo.collate(view, records)
    out = dpo.encode(view, part)
    want = _score(view, [c for r in records for c in dpo_conversations(r)]).view(3, 2)
    torch.testing.assert_close(torch.stack([out["chosen"], out["rejected"]], 1).detach(), want, rtol=0, atol=1e-5)
    torch.testing.assert_close(dpo.loss(**out)["dpo"], dpo_loss(out["chosen"], out["rejected"], out["ref_chosen"], out["ref_rejected"], 0.3))

    # Gradients reach LoRA and the soft prompt, nothing frozen.
    svco(view, svco.collate(view, records))["svco"].backward()
    grads = {n: p.grad for n, p in view.model.named_parameters() if p.grad is not None}
    assert any("lora_A" in n for n in grads) and any("soft_prompt" in n for n in grads)
    assert all(p.requires_grad for n, p in view.model.named_parameters() if n in grads)


@pytest.mark.parametrize("name", FAMILIES)
def test_reference_is_the_base_model_and_touches_no_trainable_parameter(name):
    view = _adapted(name)
    records = _records()
    base = load_view(ModelConfig(name_or_path=name))  # no adapter, no soft prompt: sequences without slots
    for objective in (SVCO(), DPO()):
        part = objective.collate(view, records)
        ref = objective.reference_logps(view, part)
        assert not ref.requires_grad
        convs = [{**c[0], **c[1]} for c in map(svco_conversations, records)]
        keys = SVCO_KEYS if isinstance(objective, SVCO) else None
        want = (torch.stack([_score(base, [c[k] for c in convs]) for k in keys], 1) if keys
                else _score(base, [c for r in records for c in dpo_conversations(r)]).view(3, 2))
        torch.testing.assert_close(ref, want, rtol=0, atol=1e-5)
        policy = objective.reference_table = None
        if isinstance(objective, DPO):
            policy = objective.encode(view, part)["chosen"].detach()
            assert (policy - want[:, 0]).abs().max() > 1e-2  # the adapters do change the policy

        # Poison every trainable tensor: the reference cannot have read any of them.
        saved = {n: p.detach().clone() for n, p in view.model.named_parameters() if p.requires_grad}
        with torch.no_grad():
            for p in view.model.parameters():
                if p.requires_grad:
                    p.fill_(float("nan"))
        torch.testing.assert_close(objective.reference_logps(view, part), ref, rtol=0, atol=0)
        with torch.no_grad():
            for n, p in view.model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])


def test_adapters_and_soft_prompt_come_back_even_when_the_reference_raises():
    view = _adapted("tiny-qwen2-vl")
    dpo = DPO()
    part = dpo.collate(view, _records(2))
    before = dpo.encode(view, part)["chosen"].detach()
    soft = view.soft_prompt

    def boom(module, args):
        raise RuntimeError("boom")

    handle = view.inner_model.language_model.layers[1].register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        dpo.reference_logps(view, part)
    handle.remove()
    with pytest.raises(RuntimeError, match="inside"), reference_model(view):
        assert view.soft_prompt is None
        raise RuntimeError("inside")
    assert view.soft_prompt is soft and torch.is_grad_enabled()
    lora_layers = [m for m in view.model.modules() if hasattr(m, "disable_adapters") and hasattr(m, "lora_A")]
    assert lora_layers and not any(m.disable_adapters for m in lora_layers)
    torch.testing.assert_close(dpo.encode(view, part)["chosen"].detach(), before, rtol=0, atol=0)


def test_text_only_dpo_pairs_get_the_hidden_image_and_the_same_logps():
    view = _adapted("tiny-llava", soft=False)
    records = [{"prompt": "Which number comes after two?", "chosen": "three", "rejected": "four", "images": [], "index": i}
               for i in range(2)]
    dpo = DPO()
    part = dpo.collate(view, records)
    assert "pixel_values" in part["dpo_sequences"]  # every rank runs the vision tower, masked out
    out = dpo.encode(view, part)
    plain = [{"messages": [{"role": "user", "content": "Which number comes after two?"},
                           {"role": "assistant", "content": a}], "images": []} for a in ("three", "four")]
    want = torch.cat([view.sequence_logps(view.collate([c], {"messages"}, hidden_image=False)) for c in plain])
    torch.testing.assert_close(torch.stack([out["chosen"][0], out["rejected"][0]]).detach(), want.detach(), rtol=0, atol=1e-5)


def test_pair_counts_make_a_step_independent_of_its_split():
    """Two micro-batches of 1 and 3 pairs give the gradient of one micro-batch of 4 (loss-normalisation rule)."""
    from tunevl.train.engine import TrainModule
    from tunevl.train.loop import step_scales

    view = _adapted("tiny-llava")
    module = TrainModule(view, [SVCO(), DPO()])
    records = _records(4)
    dist = DistInfo()

    def grads(splits):
        batches = [module.collate(records[a:b], {"images", "contrast_images", "chosen", "rejected"}) for a, b in splits]
        for batch, scale in zip(batches, step_scales(module, batches, dist, len(batches))):
            sum(module(batch, scale).values()).backward()
        out = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
        module.zero_grad(set_to_none=True)
        return out

    one, split = grads([(0, 4)]), grads([(0, 1), (1, 4)])
    assert one.keys() == split.keys() and len(one) > 4
    for n in one:
        torch.testing.assert_close(split[n], one[n], rtol=1e-4, atol=1e-6)


# ---- precomputed reference log-probs -------------------------------------------------------------
def _key(view, dataset, objective=None, config=None, **kw):
    inputs = reference_key_inputs(objective or SVCO(), view, dataset, config or ModelConfig("tiny-llava"), autocast=False, **kw)
    return reference_cache_key(inputs), inputs


def test_the_cache_key_changes_with_each_of_its_inputs(tmp_path):
    view = load_view(ModelConfig("tiny-llava"))
    path = write_mvc(tmp_path / "d", SyntheticContrast(4))
    data = PreferenceSource(str(path))
    key, inputs = _key(view, data)
    assert key == _key(load_view(ModelConfig("tiny-llava")), PreferenceSource(str(path)))[0]  # stable across loads

    changed = {}
    rows = json.loads(path.read_text())
    rows[1]["chosen_response"] += " indeed"
    (tmp_path / "d" / "text.json").write_text(json.dumps(rows))
    changed["data text"] = _key(view, PreferenceSource(str(tmp_path / "d" / "text.json")))[0]
    from PIL import Image

    image = Image.open(tmp_path / "d" / "images" / "000002_rejected.png").convert("RGB")
    image.putpixel((0, 0), (255, 255, 255))
    image.save(tmp_path / "d" / "images" / "000002_rejected.png")
    changed["image pixels"] = _key(view, data)[0]

    other = load_view(ModelConfig("tiny-llava"))
    other.processor.chat_template = other.processor.chat_template.replace("'ASSISTANT:'", "'ASSISTANT :'")
    assert "ASSISTANT :" in other.processor.chat_template
    changed["chat template"] = _key(other, data)[0]
    other = load_view(ModelConfig("tiny-llava"))
    other.processor.image_processor.image_mean = [0.5, 0.5, 0.5]
    changed["processor settings"] = _key(other, data)[0]
    changed["model revision"] = _key(view, data, config=ModelConfig("tiny-llava", revision="v2"))[0]
    from tunevl.models.tiny_lvlm import build_tiny_llava

    model, processor = build_tiny_llava(seed=1)
    model.save_pretrained(tmp_path / "m"), processor.save_pretrained(tmp_path / "m")
    changed["model weights"] = _key(view, data, config=ModelConfig(str(tmp_path / "m")))[0]
    changed["objective"] = _key(view, data, objective=DPO())[0]
    changed["reference adapters"] = reference_cache_key({**inputs, "reference": {**inputs["reference"], "adapters": ["sft"]}})
    view.max_length = 64
    changed["truncation"] = _key(view, data)[0]
    keys = [key, *changed.values()]
    dupes = [name for name, k in changed.items() if keys.count(k) > 1]
    assert not dupes, dupes


def test_precomputed_reference_equals_on_the_fly_and_is_cached_next_to_the_data(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tunevl")
    view = _adapted("tiny-qwen2-vl")
    path = write_mvc(tmp_path / "d", SyntheticContrast(5))
    data = PreferenceSource(str(path))
    svco = SVCO(precompute_ref_log_probs=True)
    config = ModelConfig("tiny-qwen2-vl")
    [written] = prepare_reference_logps([svco, DPO()], view, data, config, DistInfo(), autocast=False, batch_size=2)
    assert written.parent == tmp_path / "d" / ".tunevl_cache" / "reference_logps" and written.is_file()
    table = svco.reference_table
    assert table.shape == (5, 6) and "computing 5 records" in caplog.text

    records = [data[i] for i in range(5)]
    part = svco.collate(view, records[1:4])
    torch.testing.assert_close(part["svco_reference"], table[1:4])
    fresh = SVCO()
    torch.testing.assert_close(fresh.reference_logps(view, fresh.collate(view, records[1:4])), table[1:4], rtol=0, atol=1e-5)
    svco.reference_logps = None  # with the table, encode never runs the reference
    out = svco.encode(view, part)
    torch.testing.assert_close(torch.stack([out["reference"][k] for k in SVCO_KEYS], 1), table[1:4])

    caplog.clear()
    again = SVCO(precompute_ref_log_probs=True)
    assert prepare_reference_logps([again], view, PreferenceSource(str(path)), config, DistInfo(), autocast=False) == [written]
    assert "cache hit" in caplog.text and torch.equal(again.reference_table, table)

    # A stale file is never read: other data -> other key -> recomputed; a file with a foreign key is ignored.
    rows = json.loads(path.read_text())
    rows[0]["rejected_response"] = "something else"
    path.write_text(json.dumps(rows))
    caplog.clear()
    stale = SVCO(precompute_ref_log_probs=True)
    [new] = prepare_reference_logps([stale], view, PreferenceSource(str(path)), config, DistInfo(), autocast=False)
    assert new != written and "cache hit" not in caplog.text and not torch.equal(stale.reference_table[0], table[0])
    new.write_bytes(written.read_bytes())  # the old table under the new name: its stored key gives it away
    caplog.clear()
    again = SVCO(precompute_ref_log_probs=True)
    prepare_reference_logps([again], view, PreferenceSource(str(path)), config, DistInfo(), autocast=False)
    assert "computed for other inputs" in caplog.text and "cache hit" not in caplog.text
    torch.testing.assert_close(again.reference_table, stale.reference_table)
