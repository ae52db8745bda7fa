"""Every shipped dual-encoder recipe trains on its tiny twin (the LVLM recipes: tests/lvlm/test_lvlm_recipes.py)."""

from __future__ import annotations

import pytest
import torch

import tunevl
from tunevl.config import shipped_recipes
from tunevl.train.loop import run

TWINS = {"clip": "tiny-clip", "siglip": "tiny-siglip"}
DUAL_ENCODER_RECIPES = [n for n in shipped_recipes() if n.split("/")[0] in TWINS]


def test_every_dual_encoder_recipe_is_covered():
    assert {"clip/lora", "siglip/lora"} <= set(DUAL_ENCODER_RECIPES)


@pytest.mark.parametrize("name", DUAL_ENCODER_RECIPES)
def test_recipe_trains_on_its_tiny_twin(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEVL_CACHE", str(tmp_path / "cache"))
    overrides = [
        f"model.name_or_path={TWINS[name.split('/')[0]]}",
        "data.train={_component_: synthetic_shapes, num_samples: 64}",  # the recipes read your JSONL
        "data.eval={_component_: synthetic_shapes, split: eval, num_samples: 16}",
        f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2", "train.per_device_train_batch_size=8",
        "train.dataloader_num_workers=0", "train.report_to=none", "train.progress_bar=false", "train.save_steps=0",
    ]
    recipe = tunevl.load_recipe(name, overrides)
    recipe.validate()
    metrics, module = run(recipe)
    assert metrics["train"]["steps"] == 2 and {"base", "trained"} <= set(metrics)
    lora_b = [p for n, p in module.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)
    loaded = tunevl.load(tmp_path / "run")
    images = [recipe.build_dataset("eval")[i]["image"] for i in range(2)]
    module.eval()
    with torch.no_grad():
        want = module.view.encode_images(module.view.preprocess_images(images))
    assert torch.equal(loaded.embed_images(images), want)
