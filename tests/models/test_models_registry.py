"""The family registry: one place for family names, checkpoint detection and which objectives serve which family."""

from __future__ import annotations

import json

import pytest

from tunevl.errors import UnsupportedModelError
from tunevl.models import DUAL_ENCODER, FAMILIES, GENERATIVE, ModelConfig, detect_family, get_family, load_view
from tunevl.models.lvlm import LvlmView
from tunevl.objectives import OBJECTIVES


def _checkpoint(tmp_path, model_type: str):
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return str(folder)


def test_every_family_is_one_entry_with_its_view_and_kind():
    assert set(GENERATIVE) | set(DUAL_ENCODER) == set(FAMILIES) and not set(GENERATIVE) & set(DUAL_ENCODER)
    for name, fam in FAMILIES.items():
        view = get_family(name)
        assert view.family == name and fam.model_types
        assert issubclass(view, LvlmView) == (name in GENERATIVE)
    assert OBJECTIVES["next_token"].families == GENERATIVE
    assert OBJECTIVES["contrastive"].families == OBJECTIVES["sigmoid"].families == DUAL_ENCODER


@pytest.mark.parametrize("model_type", ["llava_next", "llava_onevision", "mllama"])
def test_an_unsupported_model_type_is_a_one_line_error_naming_it(tmp_path, model_type):
    path = _checkpoint(tmp_path, model_type)
    with pytest.raises(UnsupportedModelError) as err:
        detect_family(path)
    message = str(err.value)
    assert "\n" not in message and f"model_type {model_type!r}" in message
    assert all(t in message for fam in FAMILIES.values() for t in fam.model_types)
    with pytest.raises(UnsupportedModelError, match=model_type):  # no fallback to the LLaVA-1.5 class
        load_view(ModelConfig(name_or_path=path))
    with pytest.raises(UnsupportedModelError, match=model_type):  # naming a family does not force it either
        load_view(ModelConfig(name_or_path=path, family="llava"))


def test_a_family_that_does_not_serve_the_checkpoint_is_an_error(tmp_path):
    path = _checkpoint(tmp_path, "qwen2_vl")
    assert detect_family(path) == "qwen2_vl" == detect_family(path, "qwen2_vl")
    with pytest.raises(UnsupportedModelError, match="'qwen2_vl', a qwen2_vl model, not llava"):
        detect_family(path, "llava")
    with pytest.raises(UnsupportedModelError, match="model family 'llava_next' is not supported"):
        detect_family(path, "llava_next")


def test_names_are_never_guessed_from():
    # Not cached and no model.family: undecided offline (load_view reads the downloaded config.json).
    for hub_id in ("llava-hf/llava-v1.6-mistral-7b-hf", "Qwen/Qwen2.5-VL-3B-Instruct", "openai/clip-vit-base-patch16"):
        assert detect_family(hub_id) is None
    assert detect_family("Qwen/Qwen2-VL-2B-Instruct", "qwen2_vl") == "qwen2_vl"


def test_validate_names_the_unsupported_model_type_in_one_line(tmp_path, capsys):
    from tunevl.cli import main

    path = _checkpoint(tmp_path, "llava_next")
    assert main(["validate", "lvlm/llava_sft_lora", f"model.name_or_path={path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.name_or_path: " in err and "model_type 'llava_next'" in err, err
