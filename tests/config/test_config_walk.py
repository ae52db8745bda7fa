"""An example schema walk, proving the config pieces compose (load -> override -> check).

The real recipe schema lives in tunevl/config/schema.py; this one is a stand-in with the
same shapes: plain sections (a callable), nested sections ({name: callable}), one
``_component_`` node picked from a registry, and lists of ``_component_`` nodes.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import peft
import pytest

from tunevl.config.check import check_call, check_component
from tunevl.config.errors import RecipeError, did_you_mean
from tunevl.config.overrides import apply_overrides
from tunevl.config.yaml12 import dump_yaml, loads_yaml


@dataclasses.dataclass
class TrainArgs:
    learning_rate: float = 1e-3
    max_steps: int = 100
    output_dir: str = "runs"
    bf16: bool = False
    report_to: list[str] | str = "none"


def build_model(name_or_path: str, revision: str | None = None, dtype: Literal["float32", "bfloat16"] = "float32"):
    """Stand-in model builder."""


class Contrastive:
    def __init__(self, view, weight: float = 1.0, temperature: float = 0.07):
        pass


class NextToken:
    def __init__(self, view, weight: float = 1.0, ignore_index: int = -100):
        pass


def synthetic_shapes(num_samples: int, image_size: int = 32, seed: int = 0):
    """Stand-in dataset builder."""


@dataclasses.dataclass
class One:
    """A single ``_component_`` node chosen from a registry."""

    registry: dict[str, Callable]
    supplied: tuple[str, ...] = ()


@dataclasses.dataclass
class Many:
    """A list of ``_component_`` nodes chosen from a registry."""

    registry: dict[str, Callable]
    supplied: tuple[str, ...] = ()


OBJECTIVES = {"contrastive": Contrastive, "next_token": NextToken}
DATASETS = {"synthetic_shapes": synthetic_shapes}
SCHEMA = {
    "model": build_model,
    "adapters": {"lora": peft.LoraConfig},
    "objectives": Many(OBJECTIVES, supplied=("view",)),
    "data": {"train": One(DATASETS), "val": One(DATASETS)},
    "train": TrainArgs,
}


def walk(tree, schema, positions, file, path=(), errors=None):
    """Checks every node of ``tree`` against ``schema``; returns all RecipeErrors."""
    errors = [] if errors is None else errors
    for key in tree:
        if key not in schema:
            errors.append(RecipeError.at(positions, path + (key,), f"unknown section{did_you_mean(key, schema)}",
                                         file=file))
    for section, spec in schema.items():
        if section not in tree:
            continue
        node, here = tree[section], path + (section,)
        if isinstance(spec, dict):
            if isinstance(node, dict):
                walk(node, spec, positions, file, here, errors)
            else:
                errors.append(RecipeError.at(positions, here, "expected a mapping", file=file))
        elif isinstance(spec, Many):
            if not isinstance(node, list):
                errors.append(RecipeError.at(positions, here, "expected a list of components", file=file))
                continue
            for i, item in enumerate(node):
                check_component(item, spec.registry, key=here + (i,), positions=positions, file=file,
                                supplied=spec.supplied, errors=errors)
        elif isinstance(spec, One):
            check_component(node, spec.registry, key=here, positions=positions, file=file, supplied=spec.supplied,
                            errors=errors)
        else:
            check_call(spec, node, key=here, positions=positions, file=file, errors=errors)
    return errors


GOOD = """\
model:
  name_or_path: tiny-clip
adapters:
  lora: {r: 8, lora_alpha: 16, target_modules: attention}
objectives:
  - _component_: contrastive
    weight: 1.0
  - {_component_: next_token, weight: 0.5}
data:
  train: {_component_: synthetic_shapes, num_samples: 4096}
train: {learning_rate: 1e-3, max_steps: 300, output_dir: runs/quickstart, report_to: no}
"""

BAD = """\
model:
  name_or_path: tiny-clip
  dtype: bf16
adapters:
  lora: {rr: 8, lora_alpha: 16}
objectives:
  - _component_: contrastive
    wieght: 1.0
  - {_component_: next_tokn, weight: 0.5}
  - {_component_: contrastive, view: x}
data:
  train: {_component_: synthetic_shapes}
  vall: {_component_: synthetic_shapes, num_samples: 1}
trian: {}
"""


def test_good_recipe_passes_and_round_trips():
    tree, pos = loads_yaml(GOOD, file="recipes/q.yaml")
    assert walk(tree, SCHEMA, pos, "recipes/q.yaml") == []
    assert tree["train"]["report_to"] == "no"  # YAML 1.2: a string, which list[str] | str accepts
    again, pos2 = loads_yaml(dump_yaml(tree), file="resolved.yaml")
    assert again == tree and walk(again, SCHEMA, pos2, "resolved.yaml") == []


def test_bad_recipe_reports_every_problem_with_its_line():
    tree, pos = loads_yaml(BAD, file="recipes/bad.yaml")
    assert [str(e) for e in walk(tree, SCHEMA, pos, "recipes/bad.yaml")] == [
        "recipes/bad.yaml:14: trian: unknown section; did you mean 'train'?",
        "recipes/bad.yaml:3: model.dtype: expected one of 'float32', 'bfloat16', got str 'bf16'; "
        "did you mean 'bfloat16'?",
        "recipes/bad.yaml:5: adapters.lora.rr: unknown key; did you mean 'r'?",
        "recipes/bad.yaml:8: objectives.0.wieght: unknown key; did you mean 'weight'?",
        "recipes/bad.yaml:9: objectives.1._component_: unknown component 'next_tokn'; did you mean 'next_token'? "
        "(registered: contrastive, next_token; or give a dotted import path like mypkg.MyClass)",
        "recipes/bad.yaml:10: objectives.2.view: set by tunevl at build time; remove it from the recipe",
        "recipes/bad.yaml:13: data.vall: unknown section; did you mean 'val'?",
        "recipes/bad.yaml:12: data.train: missing required key 'num_samples' for synthetic_shapes",
    ]


def test_overridden_values_are_blamed_on_the_override():
    tree, pos = loads_yaml(GOOD, file="recipes/q.yaml")
    tree = apply_overrides(tree, ["train.learning_rate=fast", "objectives.1.weight=0.25", "data.train.seed=[1]"], pos)
    assert [str(e) for e in walk(tree, SCHEMA, pos, "recipes/q.yaml")] == [
        "override 'data.train.seed=[1]': data.train.seed: expected int, got list [1]",
        "override 'train.learning_rate=fast': train.learning_rate: expected float, got str 'fast'",
    ]
    with pytest.raises(RecipeError, match=r"^override 'objectives\.1\.ignore_index=x': "):
        tree = apply_overrides(tree, ["objectives.1.ignore_index=x"], pos)
        check_component(tree["objectives"][1], OBJECTIVES, key=("objectives", 1), positions=pos,
                        supplied=("view",))
