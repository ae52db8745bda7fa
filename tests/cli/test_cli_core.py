"""The command line: help for every command, one-line errors, validate every shipped recipe offline."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tunevl.cli
from tunevl.cli import COMMANDS, build_parser, main
from tunevl.config import RECIPES_DIR, load_recipe, shipped_recipes

# Each shipped recipe's model, replaced by its tiny twin (validate must not need the real checkpoint).
TINY_TWINS = {"clip": "tiny-clip"}


def test_command_table_matches_modules():
    modules = {m.name for m in pkgutil.iter_modules(tunevl.cli.__path__) if not m.name.startswith("_")}
    assert {module.rsplit(".", 1)[1] for module, _ in COMMANDS.values()} == modules
    for module, _ in COMMANDS.values():
        mod = importlib.import_module(module)
        assert callable(mod.add_parser) and callable(mod.run)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tunevl " + command) and COMMANDS[command][1] in out


def test_top_level_help_lists_commands(capsys):
    build_parser().print_help()
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_shipped_recipes_include_quickstart():
    names = shipped_recipes()
    assert "quickstart" in names and any(n.startswith("clip/") for n in names)


@pytest.mark.parametrize("name", shipped_recipes())
def test_every_shipped_recipe_validates_offline(name, monkeypatch):
    """Real checkpoints named, nothing downloaded (the suite runs with HF_HUB_OFFLINE=1)."""
    recipe = load_recipe(name)
    model = recipe.tree["model"]["name_or_path"]
    assert name == "quickstart" or "/" in model, f"{name} should name the real checkpoint a user trains"
    recipe.validate()


def _base_install_lacks() -> set[str]:
    """Packages only an optional extra installs (``pip install tunevl`` without extras has none of them)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]

    def name(requirement: str) -> str:
        return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()

    core = {name(r) for r in project["dependencies"]}
    return {name(r) for extra in project["optional-dependencies"].values() for r in extra} - core


@pytest.mark.parametrize("name", [n for n in shipped_recipes() if "qlora" not in n])  # QLoRA names its extra
def test_every_shipped_recipe_validates_on_a_base_install(name, monkeypatch):
    """The README installs without extras and then validates a shipped recipe: none may need an extra."""
    import tunevl.errors

    lacks = _base_install_lacks()
    assert {"deepspeed", "bitsandbytes"} <= lacks
    real = tunevl.errors.missing_package
    monkeypatch.setattr(tunevl.errors, "missing_package", lambda package: package in lacks or real(package))
    load_recipe(name).validate()


def test_validate_cli_ok_and_errors(tmp_path, capsys):
    assert main(["validate", "quickstart"]) == 0
    assert capsys.readouterr().out.strip().endswith("quickstart.yaml: ok")

    bad = tmp_path / "bad.yaml"
    text = (RECIPES_DIR / "quickstart.yaml").read_text().replace("learning_rate:", "learning_rat:")
    bad.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "learning_rat:" in l)
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"tunevl validate: error: {bad}:{line}: train.learning_rat: unknown key; did you mean 'learning_rate'?")


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.dtype=bf16", "override 'model.dtype=bf16': model.dtype: expected one of"),
        ("train.max_steps=ten", "override 'train.max_steps=ten': train.max_steps: expected int, got str 'ten'"),
        ("objectives.0.weigth=2", "override 'objectives.0.weigth=2': objectives.0.weigth: unknown key; did you mean 'weight'?"),
        ("objectives.3.weight=2", "objectives.3"),
        ("adapters.lora.target_modules=atention", "'atention' is not a clip preset; did you mean 'attention'?"),
        ("objectives.0._component_=contrastiv", "unknown component 'contrastiv'; did you mean 'contrastive'?"),
        ("objectives.0._component_=next_token", "objectives.0._component_: 'next_token' cannot train a clip model (it serves: llava, qwen2_vl, qwen2_5_vl, idefics3, paligemma)"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message, capsys):
    assert main(["validate", "quickstart", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_overrides_reach_every_node():
    recipe = load_recipe("quickstart", ["objectives.0.weight=2", "train.learning_rate=3e-4", "adapters.lora.r=4", "~data.eval"])
    recipe.validate()
    assert recipe.build_objectives()[0].weight == 2.0
    assert recipe.train_config().learning_rate == 3e-4 and recipe.lora()["r"] == 4
    assert recipe.build_dataset("eval") is None


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "tunevl", "recipes"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "quickstart" in out.stdout


def test_validate_lists_every_problem_one_line_each(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    text = (RECIPES_DIR / "quickstart.yaml").read_text()
    text = text.replace("learning_rate:", "learning_rat:").replace("r: 8", "r: eight").replace("num_samples: 256", "num_sample: 256")
    bad.write_text(text)
    lines = text.splitlines()
    at = {word: next(i for i, l in enumerate(lines, 1) if word in l) for word in ("learning_rat:", "r: eight", "num_sample:")}
    assert main(["validate", str(bad)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tunevl validate: error: {bad}:{at['learning_rat:']}: train.learning_rat: unknown key; did you mean 'learning_rate'?",
        f"tunevl validate: error: {bad}:{at['r: eight']}: adapters.lora.r: expected int, got str 'eight'",
        f"tunevl validate: error: {bad}:{at['num_sample:']}: data.eval.num_sample: unknown key; did you mean 'num_samples'?",
    ]


def test_misspelled_preset_in_a_list_is_caught_offline(capsys):
    assert main(["validate", "lvlm/llava_sft_lora", "adapters.lora.target_modules=[langauge-all-linear, projector]"]) == 2
    assert "'langauge-all-linear' is not a llava preset; did you mean 'language-all-linear'?" in capsys.readouterr().err
