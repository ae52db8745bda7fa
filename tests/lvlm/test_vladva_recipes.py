"""The shipped VladVA recipes on their tiny twins with synthetic short and long captions, evaluation included: what
trains and what must not, and ``tunevl.load`` giving the embeddings and retrieval metrics of the trained model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import tunevl
from tunevl.config.errors import RecipeError
from tunevl.eval import evaluate
from tunevl.inference import Embedder
from tunevl.models import ModelConfig, load_view

RECIPES = {"lvlm/vladva_llava": "tiny-llava", "lvlm/vladva_qwen2_vl": "tiny-qwen2-vl"}
DATA = {"image_size": 32, "max_count": 3}


def vladva_overrides(model, out, steps=3, train_layout="either", **extra):
    """The recipe on its tiny twin: synthetic captions (the recipes read your JSONL), a few steps."""
    data = ", ".join(f"{k}: {v}" for k, v in DATA.items())
    items = {
        "model.name_or_path": model, "train.output_dir": str(out), "train.max_steps": steps, "train.progress_bar": "false",
        "train.per_device_train_batch_size": 4, "train.gradient_accumulation_steps": 1, "train.save_steps": 0,
        "train.grad_cache_chunk_size": 3,  # the recipes' GradCache, shrunk with the batch (chunks of [1, 3])
        "train.learning_rate": 1e-2, "train.warmup_ratio": 0.0, "train.per_device_eval_batch_size": 8, **extra,
    }
    return [f"data.train={{_component_: synthetic_captions, split: train, layout: {train_layout}, num_samples: 32, {data}}}",
            f"data.eval={{_component_: synthetic_captions, split: eval, num_samples: 12, {data}}}",
            *[f"{k}={v}" for k, v in items.items()]]


def test_recipes_name_real_checkpoints_with_the_papers_settings():
    for name in RECIPES:
        recipe = tunevl.load_recipe(name)
        recipe.validate()
        tree = recipe.tree
        assert tree["model"]["name_or_path"] in ("llava-hf/llava-1.5-7b-hf", "Qwen/Qwen2-VL-2B-Instruct")
        assert [o["_component_"] for o in tree["objectives"]] == ["vladva_contrastive", "vladva_captions"]
        assert all(o.get("weight", 1.0) == 1.0 for o in tree["objectives"])  # a plain sum
        lora = tree["adapters"]["lora"]
        assert (lora["r"], lora["lora_alpha"], lora["target_modules"]) == (16, 16, "language-all-linear")
        assert tree["adapters"]["embedding_prompts"]["soft"] is True
        train = recipe.train_config()
        assert train.learning_rate == 1e-4 and train.lr_scheduler_type == "cosine"
        # One InfoNCE over the paper's 1024 pairs on 8 GPUs, in GradCache chunks.
        assert train.per_device_train_batch_size * 8 == 1024 and train.gradient_accumulation_steps == 1
        assert 2 <= train.grad_cache_chunk_size < train.per_device_train_batch_size
        assert tree["data"]["train"]["_component_"] == "length_split" and tree["data"]["eval"]["_component_"] == "karpathy"


def test_recipe_checks_name_the_key():
    base = tunevl.load_recipe("lvlm/vladva_llava").tree
    without = tunevl.load_recipe("lvlm/vladva_llava", ["~adapters.embedding_prompts"])
    with pytest.raises(RecipeError, match=r"objectives\.0\._component_: 'vladva_contrastive' needs adapters.embedding_prompts"):
        without.validate()
    both = tunevl.load_recipe("lvlm/vladva_llava", ["adapters.soft_prompt={init_text: hello}"])
    with pytest.raises(RecipeError, match=r"adapters\.soft_prompt: an embedder"):
        both.validate()
    clip = tunevl.load_recipe("quickstart", ["adapters.embedding_prompts={}"])
    with pytest.raises(RecipeError, match=r"adapters\.embedding_prompts: embedding prompts make a generative LVLM"):
        clip.validate()
    assert base["adapters"]["embedding_prompts"]["image_prompt"] == "Summary above image in one word:"


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_trains_and_the_bundle_embeds_as_the_trained_model(name, tmp_path):
    from tunevl.train.loop import run

    out = tmp_path / "run"
    recipe = tunevl.load_recipe(name, vladva_overrides(RECIPES[name], out))
    recipe.validate()
    metrics, module = run(recipe)
    view = module.view
    assert {"i2t_R@1", "t2i_R@1"} <= set(metrics["base"]) and metrics["trained"]["num_images"] == 12

    # Trained: LoRA and both soft prompts; frozen: every base weight, the vision tower and projector included.
    base = load_view(ModelConfig(name_or_path=RECIPES[name])).base_model.state_dict()
    named = dict(view.model.named_parameters())
    assert all(named[n].abs().sum() > 0 for n in named if "lora_B" in n)
    frozen = 0
    for n, value in view.base_model.state_dict().items():
        if "lora_" in n or "soft_prompt" in n:
            continue
        frozen += 1
        assert torch.equal(value, base[n.replace("base_layer.", "")]), n
    assert frozen > 40 and not any("modules_to_save" in n for n in named)
    init = load_view(ModelConfig(name_or_path=RECIPES[name]))
    from tunevl.adapters.embedding_prompts import apply_embedding_prompts

    apply_embedding_prompts(init, recipe.embedding_prompts())
    for key in ("image", "text"):
        assert not torch.equal(view.soft_prompts[key].weight.detach(), init.soft_prompts[key].weight.detach()), key

    meta = json.loads((out / "tunevl.json").read_text())
    assert meta["adapters"] == ["lora"] and meta["extras"] == ["soft_prompt.image", "soft_prompt.text"]
    assert meta["embedding_prompts"] == {"image_prompt": "Summary above image in one word:",
                                         "text_prompt": "Summary above sentence in one word:", "soft": True, "num_tokens": None}
    assert sorted(load_file(out / "tunevl_extras.safetensors")) == meta["extras"]

    # tunevl.load gives the embeddings the trained model computes, and the metrics of its last evaluation.
    view.model.eval()
    loaded = tunevl.load(out)
    assert isinstance(loaded, Embedder)
    eval_set = recipe.build_dataset("eval")
    images, texts = [eval_set[i]["image"] for i in range(5)], [eval_set[i]["text"] for i in range(5)]
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed_images(images), Embedder(view).embed_images(images), rtol=0, atol=1e-5)
        torch.testing.assert_close(loaded.embed_texts(texts), Embedder(view).embed_texts(texts), rtol=0, atol=1e-5)
    again = evaluate(loaded, eval_set, recipe.eval_config())
    assert again == pytest.approx(metrics["trained"], abs=1e-6)
    assert loaded.embed_images(images).norm(dim=-1).sub(1).abs().max() < 1e-5
    assert loaded.classify(images[:2], ["red", "blue"]).shape == (2, 2)
    assert isinstance(loaded.generate(images[:1], "How many circles?", max_new_tokens=3), str)


def test_cli_eval_measures_an_embedder_bundle_and_its_base(tmp_path, capsys):
    from tunevl.cli import main
    from tunevl.train.loop import run

    out = tmp_path / "run"
    run(tunevl.load_recipe("lvlm/vladva_qwen2_vl", vladva_overrides("tiny-qwen2-vl", out, steps=1, **{"train.eval_at_start": "false"})))
    data = "{_component_: synthetic_captions, split: eval, num_samples: 12, image_size: 32, max_count: 3}"
    capsys.readouterr()
    assert main(["eval", str(out), "--data", data, "--json", "--ks", "1"]) == 0
    got = json.loads(capsys.readouterr().out)["metrics"]
    want = json.loads((out / "metrics.json").read_text())["trained"]
    for key in ("i2t_R@1", "t2i_R@1"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), (key, got)
    # --base on the recipe: the untrained LVLM as an embedder with the handcrafted prompts.
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((out / "recipe.yaml").read_text())
    assert main(["eval", str(recipe), "--base", "--data", data, "--json", "--ks", "1"]) == 0
    assert "i2t_R@1" in json.loads(capsys.readouterr().out)["metrics"]
