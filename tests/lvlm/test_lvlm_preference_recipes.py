"""The shipped preference recipes (S-VCO on LLaVA, S-VCO + next-token on Qwen2-VL with a soft prompt, DPO on
Qwen2-VL with POPE evaluation) run on their tiny twins through the training loop, with their evaluation; the
bundle reloads to the same log-probs; precomputed reference log-probs (``tunevl data reference-logps``, then a
cache hit) train the same adapter as the reference computed at every step."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import tunevl
from tunevl.data.synthetic import render_shapes
from tunevl.data.synthetic_contrast import SyntheticContrast, write_mvc
from tunevl.models import ModelConfig, load_view

RECIPES = {"lvlm/svco_llava": "tiny-llava", "lvlm/svco_qwen2_vl": "tiny-qwen2-vl", "lvlm/dpo_qwen2_vl": "tiny-qwen2-vl"}
CONTRAST = ["data.train={_component_: synthetic_contrast, split: train}",   # the recipes read your MVC / TRL files;
            "data.eval={_component_: synthetic_contrast, split: eval}"]     # tests swap in synthetic pairs


def pope_file(folder, n=4):
    """A small POPE question file (JSONL despite .json) over rendered shapes."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        render_shapes(1, "red", ("circle", "square")[i % 2], image_size=32, seed=i).save(folder / f"{i}.jpg")
        rows.append({"question_id": i + 1, "image": f"{i}.jpg", "text": "Is there a circle in the image?",
                     "label": "yes" if i % 2 == 0 else "no"})
    path = folder / "coco_pope_random.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_overrides(model, out, steps=3, data=CONTRAST, **extra):
    items = {
        "model.name_or_path": model, "train.output_dir": str(out), "train.max_steps": steps, "train.progress_bar": "false",
        "train.per_device_train_batch_size": 2, "train.gradient_accumulation_steps": 2, "train.save_steps": 0,
        "train.learning_rate": 1e-2, "train.warmup_ratio": 0.0, "train.eval_at_start": "false",
    }
    if data is CONTRAST or data == CONTRAST[:1]:
        items.update({"data.train.num_samples": 16, "data.train.image_size": 32})
    items.update(extra)
    return list(data) + [f"{k}={v}" for k, v in items.items()]


def test_recipes_name_real_checkpoints_with_the_official_settings():
    svco = tunevl.load_recipe("lvlm/svco_llava")
    svco.validate()
    assert svco.tree["model"]["name_or_path"] == "llava-hf/llava-1.5-7b-hf"
    assert svco.tree["objectives"] == [{"_component_": "svco", "beta": 0.1, "chunk_size": 1024}]
    t = svco.tree["train"]  # run_svco_example.sh: wd 0.02, beta2 0.95, warmup 5%, cosine, 1 epoch, 4 x 8 pairs a step
    assert (t["weight_decay"], t["adam_beta2"], t["warmup_ratio"], t["lr_scheduler_type"], t["num_train_epochs"]) == (0.02, 0.95, 0.05, "cosine", 1)
    assert t["per_device_train_batch_size"] * t["gradient_accumulation_steps"] == 4
    assert svco.tree["data"]["train"]["_component_"] == "preference"
    combined = tunevl.load_recipe("lvlm/svco_qwen2_vl")
    combined.validate()
    names = [o["_component_"] for o in combined.tree["objectives"]]
    assert names == ["svco", "next_token"] and 0 < combined.tree["objectives"][1]["weight"] < 1
    assert "soft_prompt" in combined.tree["adapters"] and combined.tree["model"]["name_or_path"] == "Qwen/Qwen2-VL-2B-Instruct"
    dpo = tunevl.load_recipe("lvlm/dpo_qwen2_vl")
    dpo.validate()
    assert dpo.tree["objectives"][0]["_component_"] == "dpo" and dpo.tree["objectives"][0]["beta"] == 0.1
    assert dpo.tree["data"]["eval"]["_component_"] == "pope"
    bad = tunevl.load_recipe("lvlm/svco_llava", ["model.name_or_path=openai/clip-vit-base-patch16", "model.family=clip"])
    with pytest.raises(tunevl.config.RecipeError, match="'svco' cannot train a clip model"):
        bad.validate()


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_trains_evaluates_and_reloads(name, tmp_path, lvlm_loop):
    out = tmp_path / "run"
    if name == "lvlm/dpo_qwen2_vl":  # evaluated on POPE, as shipped
        pope = pope_file(tmp_path / "pope")
        data, extra = CONTRAST[:1], {"data.eval.path": str(pope), "data.eval.image_root": str(pope.parent), "eval.max_samples": 2}
    else:
        data, extra = CONTRAST, {"data.eval.num_samples": 4, "data.eval.image_size": 32}
    recipe = tunevl.load_recipe(name, tiny_overrides(RECIPES[name], out, data=data, **extra))
    recipe.validate()
    metrics, module = lvlm_loop.run(recipe)
    view = module.view
    trained = metrics["trained"]
    assert {"f1", "yes_ratio", "accuracy"} <= set(trained) if "dpo" in name else {"accuracy", "accuracy/pairs"} <= set(trained)

    base = load_view(ModelConfig(name_or_path=RECIPES[name])).base_model.state_dict()
    params = dict(view.model.named_parameters())
    assert all(params[n].detach().abs().sum() > 0 for n in params if "lora_B" in n)
    for n, value in view.base_model.state_dict().items():
        if not any(k in n for k in ("lora_", "modules_to_save", "soft_prompt")):
            assert torch.equal(value, base[n.replace("base_layer.", "").replace("original_module.", "")]), n
    if view.soft_prompt is not None:
        from tunevl.adapters.soft_prompt import apply_soft_prompt

        fresh = load_view(ModelConfig(name_or_path=RECIPES[name]))
        apply_soft_prompt(fresh, recipe.soft_prompt())
        assert not torch.equal(view.soft_prompt.weight.detach(), fresh.soft_prompt.weight.detach())

    m = tunevl.load(out)
    records = [SyntheticContrast(2, split="eval")[i] for i in range(2)]
    batch = m.view.collate([r | {"messages": r["messages"]} for r in records], {"messages"})
    view.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(m.view.sequence_logps(batch), view.sequence_logps(batch), rtol=0, atol=1e-5)
    card = (out / "README.md").read_text()
    assert recipe.tree["objectives"][0]["_component_"] in card


def test_precomputed_reference_logps_train_the_same_adapter(tmp_path, lvlm_loop, caplog):
    caplog.set_level(logging.INFO, logger="tunevl")
    data = write_mvc(tmp_path / "data", SyntheticContrast(8, split="train", image_size=32))
    train = [f"data.train={{_component_: preference, path: {data}}}", "~data.eval"]

    def run(out, precompute):
        overrides = tiny_overrides("tiny-qwen2-vl", out, steps=2, data=train, **{"objectives.0.precompute_ref_log_probs": precompute})
        recipe = tunevl.load_recipe("lvlm/svco_qwen2_vl", overrides)
        recipe.validate()
        return lvlm_loop.run(recipe)[1], recipe

    # Ahead of time, as a user would: the CLI writes the cache next to the data.
    from tunevl.cli import main

    overrides = tiny_overrides("tiny-qwen2-vl", tmp_path / "x", data=train)
    assert main(["data", "reference-logps", "lvlm/svco_qwen2_vl", *overrides]) == 0
    cached = list((tmp_path / "data" / ".tunevl_cache" / "reference_logps").glob("svco-*.safetensors"))
    assert len(cached) == 1

    caplog.clear()
    fast, _ = run(tmp_path / "pre", "true")
    assert f"cache hit {cached[0]}" in caplog.text and "computing" not in caplog.text
    slow, _ = run(tmp_path / "fly", "false")
    a = {n: p for n, p in fast.named_parameters() if p.requires_grad}
    b = {n: p for n, p in slow.named_parameters() if p.requires_grad}
    assert a.keys() == b.keys() and len(a) > 4
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-3, atol=1e-4)  # reference scored in other batches: float noise
