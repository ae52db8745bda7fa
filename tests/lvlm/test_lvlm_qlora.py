"""QLoRA (bitsandbytes 4-bit on CPU): every generative family quantises its language model only; the shipped
recipe trains LoRA and nothing else; its bundle is plain LoRA that loads on the quantised and the unquantised
base, with plain peft too, and merges into the unquantised base."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import tunevl
from tunevl.adapters.lora import apply_lora
from tunevl.config.errors import RecipeError
from tunevl.data.synthetic_vqa import SyntheticVQA
from tunevl.models import GENERATIVE, ModelConfig, load_view

bnb = pytest.importorskip("bitsandbytes")
TWINS = {"llava": "tiny-llava", "qwen2_vl": "tiny-qwen2-vl", "qwen2_5_vl": "tiny-qwen2.5-vl", "idefics3": "tiny-idefics3",
         "paligemma": "tiny-paligemma"}
NF4 = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_use_double_quant": True}
SYNTHETIC_VQA = ["data.train={_component_: synthetic_vqa, split: train}", "data.eval={_component_: synthetic_vqa, split: eval}"]


def _quantised(model) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


@pytest.mark.parametrize("family", list(TWINS))
def test_every_family_quantises_its_language_model_only_and_trains_lora(family):
    assert set(TWINS) == set(GENERATIVE)
    view = load_view(ModelConfig(name_or_path=TWINS[family], quantization=NF4))
    assert view.quantized
    quantised = _quantised(view.base_model)
    linear = {n for n, m in view.base_model.named_modules() if isinstance(m, torch.nn.Linear)}
    keep = view.unquantized_modules
    assert quantised and all(not n.startswith(keep) for n in quantised)
    assert all(n.startswith(keep) for n in linear - quantised)  # everything else: vision tower, projector, head
    vision = {id(m) for t in view.vision_trunk() for m in t.modules()} | {id(m) for m in view.projector().modules()}
    assert not any(id(m) in vision for n, m in view.base_model.named_modules() if n in quantised)
    apply_lora(view, {"r": 4, "target_modules": "language-all-linear"})
    for p in view.model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    record = SyntheticVQA(2, split="eval", image_size=32)[0]
    loss = -view.sequence_logps(view.collate([record], {"messages"})).sum()
    loss.backward()
    grads = {n: p.grad for n, p in view.model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values()) and any(g.abs().sum() > 0 for g in grads.values())


def _overrides(out, **extra):
    items = {"model.name_or_path": "tiny-qwen2.5-vl", "train.output_dir": str(out), "train.max_steps": 3,
             "train.progress_bar": "false", "train.per_device_train_batch_size": 4, "train.save_steps": 0,
             "train.learning_rate": 1e-2, "train.warmup_ratio": 0.0, "train.eval_at_start": "true",  # then train
             "data.train.num_samples": 16, "data.train.image_size": 32, "data.eval.num_samples": 4, "data.eval.image_size": 32}
    items.update(extra)
    return SYNTHETIC_VQA + [f"{k}={v}" for k, v in items.items()]


def test_the_qlora_recipe_changes_only_lora_and_its_bundle_loads_quantised_unquantised_and_in_plain_peft(tmp_path, caplog):
    from peft import PeftModel
    from transformers import Qwen2_5_VLForConditionalGeneration

    from tunevl.adapters.merge import merge
    from tunevl.inference import Generator
    from tunevl.models.tiny import resolve_builtin
    from tunevl.train.loop import run

    out = tmp_path / "run"
    recipe = tunevl.load_recipe("lvlm/qwen2_5_vl_qlora", _overrides(out))  # the shipped settings: nf4, bf16 compute, checkpointing
    recipe.validate()
    assert recipe.tree["model"]["quantization"] == NF4 and recipe.tree["train"]["gradient_checkpointing"] is True
    before = {k: v.clone() for k, v in load_view(recipe.model_config()).base_model.state_dict().items()}
    metrics, module = run(recipe)  # evaluates, trains, evaluates: bitsandbytes' CPU repacking must not break the steps
    view = module.view
    assert view.quantized and "accuracy" in metrics["base"] and "accuracy" in metrics["trained"]

    # Only LoRA changed: every base tensor (4-bit weights and their quantisation state included) is bit-identical.
    after = view.base_model.state_dict()
    lora = {k for k in after if "lora_" in k}
    assert lora and any(after[k].abs().sum() > 0 for k in lora if "lora_B" in k)
    base_keys = {k.replace("base_layer.", "") for k in after if k not in lora}
    assert base_keys == set(before)
    for k in after:
        if k not in lora:
            assert torch.equal(after[k], before[k.replace("base_layer.", "")]), k

    meta = json.loads((out / "tunevl.json").read_text())
    assert meta["base_model"]["quantization"] == NF4 and meta["adapters"] == ["lora"]
    record = SyntheticVQA(3, split="eval", image_size=32)[1]
    kw = dict(max_new_tokens=4, min_new_tokens=4)
    view.model.eval()
    want = Generator(view).generate(record["images"], "How many circles?", **kw)

    quantised = tunevl.load(out)  # as trained
    assert quantised.view.quantized and quantised.generate(record["images"], "How many circles?", **kw) == want
    plain_base = tunevl.load(out, quantize=False)
    assert not plain_base.view.quantized and not _quantised(plain_base.view.base_model)
    batch = plain_base.view.collate([record], {"messages"})
    with torch.no_grad():
        ours = plain_base.view.logits(batch)
        base = Qwen2_5_VLForConditionalGeneration.from_pretrained(resolve_builtin("tiny-qwen2.5-vl"))
        peft_model = PeftModel.from_pretrained(base, out).eval()  # plain peft, unquantised base
        theirs = peft_model(**plain_base.view.model_inputs(batch)).logits
        untouched = Qwen2_5_VLForConditionalGeneration.from_pretrained(resolve_builtin("tiny-qwen2.5-vl"))(
            **plain_base.view.model_inputs(batch)).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, untouched, atol=1e-3)  # the LoRA is live

    caplog.set_level(logging.INFO, logger="tunevl")
    merged = merge(out, tmp_path / "merged")
    assert "merged into the unquantised base weights" in caplog.text
    assert "trained with QLoRA on a quantised base" in (merged / "README.md").read_text()
    plain = Qwen2_5_VLForConditionalGeneration.from_pretrained(merged).eval()
    assert not _quantised(plain)
    with torch.no_grad():
        torch.testing.assert_close(plain(**plain_base.view.model_inputs(batch)).logits, ours, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("override, message", [
    ("model.quantization.bnb_4bit_quant_tpe=nf4", "model.quantization.bnb_4bit_quant_tpe: not a BitsAndBytesConfig argument; did you mean 'bnb_4bit_quant_type'?"),
    ("model.quantization.load_in_4bit=false", "set load_in_4bit: true"),
    ("train.deepspeed=zero2", "DeepSpeed ZeRO cannot partition bitsandbytes weights"),
    ("~adapters.lora", "a quantised base trains LoRA"),
])
def test_qlora_recipe_problems_are_caught_by_validate(override, message):
    recipe = tunevl.load_recipe("lvlm/qwen2_5_vl_qlora", [override] + (["adapters.soft_prompt={num_tokens: 2}"] if "lora" in override else []))
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace("?", r"\?")):
        recipe.validate()


def test_quantising_a_dual_encoder_is_a_validate_error():
    recipe = tunevl.load_recipe("quickstart", ["model.quantization={load_in_4bit: true}"])
    with pytest.raises(RecipeError, match="quantization \\(QLoRA\\) is for generative families; clip trains in full precision"):
        recipe.validate()
