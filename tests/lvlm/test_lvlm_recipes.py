"""Every shipped LVLM recipe, run on its tiny twin through the training loop: what changes, what must not,
and save -> ``tunevl.load`` -> ``generate`` giving the trained model's own output."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import tunevl
from tunevl.data.synthetic_vqa import SyntheticVQA
from tunevl.inference import Generator
from tunevl.models import ModelConfig, load_view

RECIPES = {
    "lvlm/llava_sft_lora": "tiny-llava",
    "lvlm/qwen2_vl_sft_lora": "tiny-qwen2-vl",
    "lvlm/qwen2_vl_soft_prompt_lora": "tiny-qwen2-vl",
    "lvlm/qwen2_5_vl_sft_lora": "tiny-qwen2.5-vl",
    "lvlm/idefics3_sft_lora": "tiny-idefics3",
    "lvlm/paligemma_sft_lora": "tiny-paligemma",
}
# The real checkpoint each shipped recipe names.
CHECKPOINTS = {
    "lvlm/llava_sft_lora": "llava-hf/llava-1.5-7b-hf",
    "lvlm/qwen2_vl_sft_lora": "Qwen/Qwen2-VL-2B-Instruct",
    "lvlm/qwen2_vl_soft_prompt_lora": "Qwen/Qwen2-VL-2B-Instruct",
    "lvlm/qwen2_5_vl_sft_lora": "Qwen/Qwen2.5-VL-3B-Instruct",
    "lvlm/idefics3_sft_lora": "HuggingFaceTB/SmolVLM-256M-Instruct",
    "lvlm/paligemma_sft_lora": "google/paligemma2-3b-pt-224",
}
# Image-token budgets sized for 512 px tiles, shrunk with the tiny twin's 32 px tiles (a size, not a feature).
TINY_MODEL_OVERRIDES = {"lvlm/idefics3_sft_lora": {"model.processor_kwargs.size": "{longest_edge: 64}"}}


SYNTHETIC_VQA = ["data.train={_component_: synthetic_vqa, split: train}",  # the recipes read your JSONL;
                 "data.eval={_component_: synthetic_vqa, split: eval}"]     # tests swap in synthetic questions


def tiny_overrides(model, out, steps=3, recipe=None, **extra):
    items = {
        "model.name_or_path": model, "train.output_dir": str(out), "train.max_steps": steps, "train.progress_bar": "false",
        "train.per_device_train_batch_size": 4, "train.save_steps": 0, "train.learning_rate": 1e-2, "train.warmup_ratio": 0.0,
        "train.eval_at_start": "false", "data.train.num_samples": 64, "data.train.image_size": 32,
        "data.eval.num_samples": 4, "data.eval.image_size": 32,
    }
    items.update(TINY_MODEL_OVERRIDES.get(recipe, {}))
    items.update(extra)
    return SYNTHETIC_VQA + [f"{k}={v}" for k, v in items.items()]


def test_recipes_name_real_checkpoints():
    for name in RECIPES:
        recipe = tunevl.load_recipe(name)
        recipe.validate()
        assert recipe.tree["model"]["name_or_path"] == CHECKPOINTS[name]
        assert recipe.tree["objectives"][0]["_component_"] == "next_token"


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_trains_and_bundle_generates_the_same(name, tmp_path, lvlm_loop):
    out = tmp_path / "run"
    recipe = tunevl.load_recipe(name, tiny_overrides(RECIPES[name], out, recipe=name))
    recipe.validate()
    metrics, module = lvlm_loop.run(recipe)
    view = module.view

    # Trainable parameters changed; every frozen weight is bit-identical to the checkpoint.
    base = load_view(ModelConfig(name_or_path=RECIPES[name])).base_model.state_dict()
    trained = dict(view.model.named_parameters())
    changed = [n for n, p in trained.items() if p.requires_grad and ("lora_B" in n or "soft_prompt" in n or "modules_to_save" in n)]
    assert changed and all(trained[n].detach().abs().sum() > 0 for n in changed if "lora_B" in n)
    frozen = 0
    for n, value in view.base_model.state_dict().items():
        clean = n.replace("base_layer.", "").replace("original_module.", "")
        if "lora_" in n or "modules_to_save" in n or "soft_prompt" in n:
            continue
        frozen += 1
        assert torch.equal(value, base[clean]), f"frozen weight {clean} changed"
    assert frozen > 40
    if "soft_prompt" in name:
        init = load_view(ModelConfig(name_or_path=RECIPES[name]))
        from tunevl.adapters.soft_prompt import apply_soft_prompt

        apply_soft_prompt(init, recipe.soft_prompt())
        assert not torch.equal(view.soft_prompt.weight.detach(), init.soft_prompt.weight.detach())
    if "projector" in str(recipe.lora()["target_modules"]):
        proj = dict(view.projector().named_parameters())
        assert any("modules_to_save" in n for n in proj)

    meta = json.loads((out / "tunevl.json").read_text())
    assert meta["family"] == view.family and "lora" in meta["adapters"]
    extras = out / "tunevl_extras.safetensors"
    assert extras.is_file() == ("soft_prompt" in name)
    if extras.is_file():
        assert list(load_file(extras)) == ["soft_prompt.after_image"]
    assert "accuracy" in metrics["trained"]

    record = SyntheticVQA(3, split="eval")[1]
    view.model.eval()
    want = Generator(view).generate(record["images"], "How many circles?", max_new_tokens=6, min_new_tokens=4)
    m = tunevl.load(out)
    assert isinstance(m, Generator)
    got = m.generate(record["images"], "How many circles?", max_new_tokens=6, min_new_tokens=4)
    assert got == want and len(got) > 0
    # Same log-probs, not only the same greedy text.
    batch = m.view.collate([record], {"messages"})
    with torch.no_grad():
        torch.testing.assert_close(m.view.sequence_logps(batch), view.sequence_logps(batch), rtol=0, atol=1e-5)
    if "soft_prompt" in name:  # the soft prompt is applied at generation: without it the output changes
        m.view.soft_prompt.weight.data.mul_(0)
        with torch.no_grad():
            assert not torch.allclose(m.view.sequence_logps(batch), view.sequence_logps(batch), atol=1e-3)
