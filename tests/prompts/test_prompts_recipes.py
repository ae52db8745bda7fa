"""The prompt adapter kinds in recipes: offline validation, one-line errors."""

from __future__ import annotations

import pytest

import tunevl
from tunevl.config import RecipeError, shipped_recipes

PROMPT_RECIPES = ["clip/coop", "clip/cocoop", "clip/vpt", "clip/coop_lora", "siglip/coop"]


def test_prompt_recipes_validate_and_name_real_checkpoints():
    assert set(PROMPT_RECIPES) <= set(shipped_recipes())
    for name in PROMPT_RECIPES:
        recipe = tunevl.load_recipe(name)
        recipe.validate()
        assert recipe.tree["model"]["name_or_path"] in ("openai/clip-vit-base-patch16", "google/siglip-base-patch16-224")
        assert recipe.tree["objectives"][0]["_component_"] == "classification"
        assert recipe.tree["data"]["train"]["_component_"] == "few_shot"


@pytest.mark.parametrize("overrides, message", [
    (["adapters.coop.num_token=4"], r"override 'adapters.coop.num_token=4': adapters\.coop\.num_token: unknown key; did you mean 'num_tokens'\?"),
    (["adapters.coop.class_position=back"], r"adapters\.coop\.class_position: expected one of 'end', 'middle', 'front'"),
    (["adapters.cocoop={init_text: a photo of a}"], r"adapters\.cocoop: adapters\.coop and adapters\.cocoop exclude each other"),
    (["adapters.visual_prompt.num_tokens=4.5"], r"adapters\.visual_prompt\.num_tokens: expected int"),
    (["adapters.cocop={}"], r"adapters\.cocop: unknown adapter kind; did you mean 'cocoop'\? \(kinds: lora, soft_prompt, embedding_prompts, coop, cocoop, visual_prompt\)"),
    (["objectives.0.loss=hinge"], r"objectives\.0\.loss: expected one of 'softmax', 'sigmoid'"),
    (["objectives.0.augment=crop"], r"objectives\.0\.augment: expected one of 'none', 'flip', 'crop_flip'"),
    (["model.name_or_path=llava-hf/llava-1.5-7b-hf", "model.family=llava"], r"cannot train a llava model|prompt adapters serve dual encoders"),
])
def test_bad_prompt_recipes_are_one_line_errors(overrides, message):
    recipe = tunevl.load_recipe("clip/coop", overrides)
    with pytest.raises(RecipeError, match=message):
        recipe.validate()


def test_prompt_adapters_on_a_generative_model_are_refused():
    recipe = tunevl.load_recipe("lvlm/llava_sft_lora", ["adapters.coop={num_tokens: 4}"])
    with pytest.raises(RecipeError, match=r"adapters\.coop: prompt adapters serve dual encoders \(clip, siglip\), not this llava model"):
        recipe.validate()
