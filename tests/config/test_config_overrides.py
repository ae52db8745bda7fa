"""Command-line overrides (tunevl.config.overrides)."""

import copy

import pytest

from tunevl.config.errors import Origin, RecipeError
from tunevl.config.overrides import apply_overrides
from tunevl.config.yaml12 import loads_yaml

RECIPE = """\
model:
  _component_: clip
  name_or_path: tiny-clip
objectives:
  - {_component_: contrastive, weight: 1.0}
  - {_component_: next_token, weight: 2.0}
  - {_component_: kl, weight: 3.0}
train: {max_steps: 300, learning_rate: 1e-3}
eval:
"""


@pytest.fixture
def recipe():
    return loads_yaml(RECIPE, file="r.yaml")


def ov(text):
    return Origin(None, None, override=text)


def test_set_nested_creates_missing_keys(recipe):
    tree, pos = recipe
    before = copy.deepcopy(tree)
    out = apply_overrides(tree, ["train.optim.betas=[0.9, 0.98]", "new.section.value=1e-4"], pos)
    assert out["train"] == {"max_steps": 300, "learning_rate": 1e-3, "optim": {"betas": [0.9, 0.98]}}
    assert out["new"] == {"section": {"value": 1e-4}} and type(out["new"]["section"]["value"]) is float
    assert tree == before  # the input tree is not modified
    assert pos[("train", "optim")] == ov("train.optim.betas=[0.9, 0.98]")
    assert pos[("train", "optim", "betas", 1)] == ov("train.optim.betas=[0.9, 0.98]")
    assert pos[("new",)] == pos[("new", "section")] == pos[("new", "section", "value")] == ov("new.section.value=1e-4")
    assert pos[("train",)] == Origin("r.yaml", 8)  # untouched parents keep their line


def test_null_on_the_way_becomes_a_mapping(recipe):
    tree, pos = recipe
    assert apply_overrides(tree, ["eval.every=100"], pos)["eval"] == {"every": 100}


def test_list_index(recipe):
    tree, pos = recipe
    out = apply_overrides(tree, ["objectives.1.weight=0.5"], pos)
    assert [o["weight"] for o in out["objectives"]] == [1.0, 0.5, 3.0]
    assert pos[("objectives", 1, "weight")] == ov("objectives.1.weight=0.5")
    assert pos[("objectives", 0, "weight")] == Origin("r.yaml", 5)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1e-4", 1e-4),
        ("3", 3),
        ("no", "no"),
        ("true", True),
        ("null", None),
        ("~", None),
        ("''", ""),
        ("'3'", "3"),
        ("foo", "foo"),
        ("a=b", "a=b"),  # only the first '=' separates key and value
        ("[1, 2]", [1, 2]),
        ("{r: 8, alpha: 16}", {"r": 8, "alpha": 16}),
        ("runs/x y", "runs/x y"),
    ],
)
def test_values_are_typed_like_yaml(recipe, value, expected):
    tree, pos = recipe
    got = apply_overrides(tree, [f"train.x={value}"], pos)["train"]["x"]
    assert got == expected and type(got) is type(expected)


def test_replacing_a_subtree_drops_stale_positions(recipe):
    tree, pos = recipe
    out = apply_overrides(tree, ["train={max_steps: 5}"], pos)
    assert out["train"] == {"max_steps": 5}
    assert ("train", "learning_rate") not in pos
    assert pos[("train",)] == pos[("train", "max_steps")] == ov("train={max_steps: 5}")


def test_string_on_a_component_node_swaps_the_component(recipe):
    tree, pos = recipe
    out = apply_overrides(tree, ["model=mypkg.build_model"], pos)
    assert out["model"] == {"_component_": "mypkg.build_model", "name_or_path": "tiny-clip"}
    assert pos[("model", "_component_")] == ov("model=mypkg.build_model")
    assert pos[("model", "name_or_path")] == Origin("r.yaml", 3)


def test_delete_key_and_list_item(recipe):
    tree, pos = recipe
    out = apply_overrides(tree, ["~train.learning_rate", "~objectives.0", "~eval"], pos)
    assert out["train"] == {"max_steps": 300} and "eval" not in out
    assert [o["_component_"] for o in out["objectives"]] == ["next_token", "kl"]
    # later items shift down, with their positions
    assert pos[("objectives", 0)] == pos[("objectives", 0, "weight")] == Origin("r.yaml", 6)
    assert pos[("objectives", 1, "_component_")] == Origin("r.yaml", 7)
    assert ("objectives", 2) not in pos and ("objectives", 2, "weight") not in pos
    assert ("train", "learning_rate") not in pos and ("eval",) not in pos


def test_overrides_apply_in_order(recipe):
    tree, pos = recipe
    out = apply_overrides(tree, ["~objectives.0", "objectives.0.weight=9"], pos)
    assert out["objectives"][0] == {"_component_": "next_token", "weight": 9}


@pytest.mark.parametrize(
    "override, message",
    [
        ("objectives.5.weight=2",
         "override 'objectives.5.weight=2': objectives.5: index 5 out of range; 'objectives' has 3 items (valid: 0..2)"),
        ("objectives.-1.weight=2", "override 'objectives.-1.weight=2': objectives.-1: negative list indices are not supported"),
        ("objectives.first.weight=2",
         "override 'objectives.first.weight=2': objectives.first: 'objectives' is a list; expected an index, got 'first'"),
        ("train.max_steps.x=1", "override 'train.max_steps.x=1': train.max_steps: cannot index into int 300"),
        ("model.name_or_path.0=1", "override 'model.name_or_path.0=1': model.name_or_path: cannot index into str 'tiny-clip'"),
        ("train.max_steps", "override 'train.max_steps': expected 'key=value' or '~key'"),
        ("train.max_steps=",
         "override 'train.max_steps=': empty value; write 'key=null' for None or \"key=''\" for an empty string"),
        ("--max_steps=3", "override '--max_steps=3': options are not overrides; write 'key=value' without dashes"),
        ("train..max_steps=3",
         "override 'train..max_steps=3': malformed key 'train..max_steps'; expected dotted names like 'train.max_steps'"),
        ("~train.max_step", "override '~train.max_step': train.max_step: no such key; did you mean 'max_steps'?"),
        ("~objectives.3", "override '~objectives.3': objectives.3: index 3 out of range; 'objectives' has 3 items (valid: 0..2)"),
        ("~nope.x", "override '~nope.x': nope: no such key"),
        ("~train.max_steps=1", "override '~train.max_steps=1': a deletion '~key' takes no value"),
        ("train.x=[1,", "override 'train.x=[1,': train.x: invalid YAML value '[1,': expected the node content, "
                        "but found '<stream end>' (while parsing a flow node)"),
    ],
)
def test_malformed_overrides_name_the_override(recipe, override, message):
    tree, pos = recipe
    with pytest.raises(RecipeError) as info:
        apply_overrides(tree, [override], pos)
    assert str(info.value) == message
    assert info.value.override == override


def test_digit_keys_of_mappings(recipe):
    tree, pos = loads_yaml("labels: {0: cat, '1': dog}\n")
    out = apply_overrides(tree, ["labels.0=lion", "labels.1=wolf", "labels.2=owl"], pos)
    assert out["labels"] == {0: "lion", "1": "wolf", "2": "owl"}
