"""Every shipped dual-encoder recipe trains on its tiny twin (the LVLM recipes: tests/lvlm/test_lvlm_recipes.py).

The recipes read your files; the tests swap in the synthetic set that carries what each recipe's
objectives use (counts, hard-negative images, labels) and synthetic twins of its benchmarks, and keep every
feature (evaluation and benchmarks included).
"""

from __future__ import annotations

import pytest
import torch

import tunevl
from tunevl.config import shipped_recipes
from tunevl.data.synthetic import SyntheticShapes
from tunevl.models import ModelConfig, load_view
from tunevl.train.loop import build_view, run, set_seed

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
    assert {"clip/lora", "siglip/lora", "clip/count", "siglip/count", "clip/negclip", "clip/coop", "clip/cocoop",
            "clip/vpt", "clip/coop_lora", "siglip/coop"} <= set(DUAL_ENCODER_RECIPES)


def _data_overrides(name: str) -> list[str]:
    """The recipes read your files; the tests swap in synthetic sets of the same kind."""
    train = tunevl.load_recipe(name).tree["data"]["train"]
    if train["_component_"] == "few_shot":  # classification: few_shot over a labelled source, as shipped
        return ["data.train.source={_component_: synthetic_shapes, num_samples: 64, vary: count}",
                "data.train.num_shots=4", "data.eval={_component_: synthetic_shapes, split: eval, num_samples: 16, vary: count}"]
    train_data, eval_data = SYNTHETIC_DATA.get(name, SHAPES)
    return [f"data.train={train_data}", f"data.eval={eval_data}"]


@pytest.mark.parametrize("name", DUAL_ENCODER_RECIPES)
def test_recipe_trains_on_its_tiny_twin(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEVL_CACHE", str(tmp_path / "cache"))
    twin = TWINS[name.split("/")[0]]
    overrides = [
        f"model.name_or_path={twin}", *_data_overrides(name),
        f"train.output_dir={tmp_path / 'run'}", "train.max_steps=3", "train.per_device_train_batch_size=4",
        "train.dataloader_num_workers=0", "train.report_to=none", "train.progress_bar=false", "train.save_steps=0",
    ]
    shipped = (tunevl.load_recipe(name).tree.get("eval") or {}).get("benchmarks", [])
    if shipped:
        twins = [SYNTHETIC_BENCHMARKS[node["_component_"]] for node in shipped]
        overrides.append(f"eval.benchmarks=[{', '.join(twins)}]")
    recipe = tunevl.load_recipe(name, overrides)
    recipe.validate()
    set_seed(recipe.train_config().seed)  # as the loop does: the trainables it starts from
    start = {n: p.detach().clone() for n, p in build_view(recipe, seed=recipe.train_config().seed).model.named_parameters()
             if p.requires_grad}
    metrics, module = run(recipe)
    assert metrics["train"]["steps"] == 3 and {"base", "trained"} <= set(metrics)
    for node in (recipe.tree.get("eval") or {}).get("benchmarks", []):
        prefix = node.get("name", node["_component_"])
        assert f"{prefix}/accuracy" in metrics["trained"], prefix
        if node["_component_"] == "synthetic_counting":
            assert (tmp_path / "run" / "synthetic_counting_confusion.png").is_file()
    assert f"{recipe.tree['objectives'][-1]['_component_']} (weight" in (tmp_path / "run" / "README.md").read_text()
    view = module.view
    trained = {n: p for n, p in view.model.named_parameters() if p.requires_grad}
    assert start and set(trained) >= set(start)  # (+ class-specific contexts, bound to the data's classes)
    assert all(not torch.equal(trained[n].detach(), start[n]) for n in start), [n for n in start if torch.equal(trained[n], start[n])]
    base = load_view(ModelConfig(twin)).base_model.state_dict()
    for n, value in view.base_model.state_dict().items():  # every frozen weight is the checkpoint's
        if "lora_" not in n and "tunevl_" not in n and not any(n.endswith(e) for e in view.extra_trainables()):
            assert torch.equal(value, base[n.replace("base_layer.", "")]), n

    loaded = tunevl.load(tmp_path / "run")
    ds = recipe.build_dataset("eval")
    images = [ds[i]["image"] for i in range(2)]
    module.eval()
    with torch.no_grad():
        want = view.encode_images(view.preprocess_images(images))
    assert torch.equal(loaded.embed_images(images), want)
    if "classification" in [o["_component_"] for o in recipe.tree["objectives"]]:
        names = SyntheticShapes(vary="count").classnames
        assert torch.equal(loaded.classify(images, names), tunevl.inference.DualEncoder(view).classify(images, names))
