"""Every shipped dual-encoder recipe trains on its tiny twin (the LVLM recipes: tests/lvlm/test_lvlm_recipes.py).

The recipes read your files; the tests swap in the synthetic set that carries what each recipe's
objectives use (counts, hard-negative images) and synthetic twins of its benchmarks, and keep every
feature (evaluation and benchmarks included).
"""

from __future__ import annotations

import pytest
import torch

import tunevl
from tunevl.config import shipped_recipes
from tunevl.train.loop import run

TWINS = {"clip": "tiny-clip", "siglip": "tiny-siglip"}
DUAL_ENCODER_RECIPES = [n for n in shipped_recipes() if n.split("/")[0] in TWINS]
SHAPES = ("{_component_: synthetic_shapes, num_samples: 64}", "{_component_: synthetic_shapes, split: eval, num_samples: 16}")
# recipe -> (data.train, data.eval) when synthetic shapes lack what it trains on
SYNTHETIC_DATA = {
    "clip/negclip": ("{_component_: synthetic_binding, num_samples: 64, negatives: false}",
                     "{_component_: synthetic_binding, split: eval, num_samples: 16}"),
}
# a recipe's benchmark -> its synthetic twin
SYNTHETIC_BENCHMARKS = {
    "countbench": "{_component_: synthetic_counting, num_samples: 24}",
    "sugarcrepe": "{_component_: synthetic_binding, num_samples: 12, name: binding_a}",
    "aro_vg_relation": "{_component_: synthetic_binding, num_samples: 12, name: binding_b}",
    "aro_vg_attribution": "{_component_: synthetic_binding, num_samples: 12, name: binding_c}",
}


def test_every_dual_encoder_recipe_is_covered():
    assert {"clip/lora", "siglip/lora", "clip/count", "siglip/count", "clip/negclip"} <= set(DUAL_ENCODER_RECIPES)


@pytest.mark.parametrize("name", DUAL_ENCODER_RECIPES)
def test_recipe_trains_on_its_tiny_twin(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEVL_CACHE", str(tmp_path / "cache"))
    train_data, eval_data = SYNTHETIC_DATA.get(name, SHAPES)
    overrides = [
        f"model.name_or_path={TWINS[name.split('/')[0]]}",
        f"data.train={train_data}", f"data.eval={eval_data}",  # the recipes read your files
        f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2", "train.per_device_train_batch_size=8",
        "train.dataloader_num_workers=0", "train.report_to=none", "train.progress_bar=false", "train.save_steps=0",
        "train.warmup_steps=0",
    ]
    shipped = tunevl.load_recipe(name).tree.get("eval", {}).get("benchmarks", [])
    if shipped:
        twins = [SYNTHETIC_BENCHMARKS[node["_component_"]] for node in shipped]
        overrides.append(f"eval.benchmarks=[{', '.join(twins)}]")
    recipe = tunevl.load_recipe(name, overrides)
    recipe.validate()
    metrics, module = run(recipe)
    assert metrics["train"]["steps"] == 2 and {"base", "trained"} <= set(metrics)
    for node in recipe.tree.get("eval", {}).get("benchmarks", []):
        prefix = node.get("name", node["_component_"])
        assert f"{prefix}/accuracy" in metrics["trained"], prefix
        if node["_component_"] == "synthetic_counting":
            assert (tmp_path / "run" / "synthetic_counting_confusion.png").is_file()
    assert f"{recipe.tree['objectives'][-1]['_component_']} (weight" in (tmp_path / "run" / "README.md").read_text()
    lora_b = [p for n, p in module.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)
    loaded = tunevl.load(tmp_path / "run")
    images = [recipe.build_dataset("eval")[i]["image"] for i in range(2)]
    module.eval()
    with torch.no_grad():
        want = module.view.encode_images(module.view.preprocess_images(images))
    assert torch.equal(loaded.embed_images(images), want)
