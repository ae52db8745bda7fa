"""YAML 1.2 loading, positions, errors and dumping (tunevl.config.yaml12)."""

import math
import pathlib

import pytest

from tunevl.config.errors import Origin, RecipeError
from tunevl.config.yaml12 import dump_yaml, load_yaml, loads_yaml, parse_scalar


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1e-4", 1e-4),
        ("1E3", 1000.0),
        ("-2.5e+2", -250.0),
        ("1.", 1.0),
        (".5", 0.5),
        ("1.0", 1.0),
        (".inf", math.inf),
        ("-.Inf", -math.inf),
        ("no", "no"),
        ("yes", "yes"),
        ("on", "on"),
        ("Off", "Off"),
        ("y", "y"),
        ("true", True),
        ("False", False),
        ("0x10", 16),
        ("0o17", 15),
        ("017", 17),  # 1.2: decimal, not octal
        ("42", 42),
        ("+12", 12),
        ("~", None),
        ("null", None),
        ("", None),
        ("2024-01-01", "2024-01-01"),  # no timestamps: stays a string
        ("'1e-4'", "1e-4"),
        ('"no"', "no"),
        ("foo", "foo"),
        ("runs/quickstart", "runs/quickstart"),
        ("[1, 2]", [1, 2]),
        ("[1e-3, no, ~]", [1e-3, "no", None]),
        ("{r: 8, target_modules: [q_proj]}", {"r": 8, "target_modules": ["q_proj"]}),
    ],
)
def test_scalars_follow_yaml_1_2(text, expected):
    value = parse_scalar(text)
    assert value == expected and type(value) is type(expected)
    tree, _ = loads_yaml(f"k: {text}\n")
    assert tree["k"] == expected and type(tree["k"]) is type(expected)


def test_values_are_plain_python_types():
    tree, _ = loads_yaml("a: 0x10\nb: 1e-4\nc: [1, {d: 2}]\n")
    assert type(tree) is dict and type(tree["c"]) is list and type(tree["c"][1]) is dict
    assert type(tree["a"]) is int and type(tree["b"]) is float


RECIPE = """\
model:
  name_or_path: tiny-clip

adapters:
  lora: {r: 8, lora_alpha: 16, target_modules: attention}   # peft.LoraConfig fields
objectives:
  - _component_: contrastive
    weight: 1.0
  -
    _component_: next_token
    weight: 0.5
  - {_component_: kl, weight: 1e-4}
data:
  train: {_component_: synthetic_shapes, num_samples: 4096}
  val:
    - a
    - [b, c]
train: {learning_rate: 1e-3, max_steps: 300, output_dir: runs/quickstart}
"""


def test_positions_are_exact():
    tree, pos = loads_yaml(RECIPE, file="recipes/q.yaml")
    lines = {path: origin.line for path, origin in pos.items()}
    assert lines == {
        (): 1,
        ("model",): 1,
        ("model", "name_or_path"): 2,
        ("adapters",): 4,
        ("adapters", "lora"): 5,
        ("adapters", "lora", "r"): 5,
        ("adapters", "lora", "lora_alpha"): 5,
        ("adapters", "lora", "target_modules"): 5,
        ("objectives",): 6,
        ("objectives", 0): 7,
        ("objectives", 0, "_component_"): 7,
        ("objectives", 0, "weight"): 8,
        ("objectives", 1): 10,  # the item starts where its content starts
        ("objectives", 1, "_component_"): 10,
        ("objectives", 1, "weight"): 11,
        ("objectives", 2): 12,
        ("objectives", 2, "_component_"): 12,
        ("objectives", 2, "weight"): 12,
        ("data",): 13,
        ("data", "train"): 14,
        ("data", "train", "_component_"): 14,
        ("data", "train", "num_samples"): 14,
        ("data", "val"): 15,
        ("data", "val", 0): 16,
        ("data", "val", 1): 17,
        ("data", "val", 1, 0): 17,
        ("data", "val", 1, 1): 17,
        ("train",): 18,
        ("train", "learning_rate"): 18,
        ("train", "max_steps"): 18,
        ("train", "output_dir"): 18,
    }
    assert all(o == Origin("recipes/q.yaml", o.line) for o in pos.values())
    assert tree["objectives"][2]["weight"] == 1e-4


def test_load_yaml_reads_a_file_and_names_it(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("a:\n  b: 1\n")
    tree, pos = load_yaml(f)
    assert tree == {"a": {"b": 1}} and pos[("a", "b")] == Origin(str(f), 2)
    with pytest.raises(RecipeError, match=r"missing\.yaml: cannot read the file"):
        load_yaml(tmp_path / "missing.yaml")


def test_empty_document_is_an_empty_mapping():
    assert loads_yaml("# only a comment\n")[0] == {}
    assert loads_yaml("")[0] == {}


@pytest.mark.parametrize(
    "text, message",
    [
        ("model:\n  name: a\n  name: b\n", "r.yaml:3: model.name: duplicate key (first defined at line 2)"),
        ("a: 1\nb:\n  - x\n  - {c: 1, c: 2}\n", "r.yaml:4: b.1.c: duplicate key (first defined at line 4)"),
        ("a: 1\n---\nb: 2\n", "r.yaml:3: more than one YAML document; a recipe is a single document"),
        ("a: !!binary aGk=\n", "r.yaml:1: a: unsupported YAML tag 'tag:yaml.org,2002:binary'"),
        ("a: !custom x\n", "r.yaml:1: a: unsupported YAML tag '!custom'"),
        ("a: &x [1, *x]\n", "r.yaml:1: a.1: recursive alias"),
        ("? [a, b]\n: 1\n", "r.yaml:1: mapping keys must be plain scalars"),
    ],
)
def test_structural_errors(text, message):
    with pytest.raises(RecipeError) as info:
        loads_yaml(text, file="r.yaml")
    assert str(info.value) == message


@pytest.mark.parametrize(
    "text, line",
    [
        ("a: 1\nb: [1, 2\nc: 3\n", 3),
        ("a:\n  b: 1\n c: 2\n", 3),
        ("a: 1\nb:\t2\n", 2),
        ("a: 'unterminated\n", 2),
        ("a: 1\nb: c: d\n", 2),
    ],
)
def test_parse_errors_are_one_line_with_file_and_line(text, line):
    with pytest.raises(RecipeError) as info:
        loads_yaml(text, file="recipes/bad.yaml")
    err = info.value
    assert (err.file, err.line) == ("recipes/bad.yaml", line)
    assert str(err).startswith(f"recipes/bad.yaml:{line}: ") and "\n" not in str(err)


def test_parse_scalar_error_has_no_location():
    with pytest.raises(RecipeError, match=r"^invalid YAML value '\[1,'"):
        parse_scalar("[1,")


def test_anchors_and_merge_keys():
    text = "base: &b {r: 8, alpha: 16}\nlora:\n  <<: *b\n  alpha: 32\nlist: [*b]\n"
    tree, pos = loads_yaml(text)
    assert tree["lora"] == {"r": 8, "alpha": 32}
    assert tree["list"] == [{"r": 8, "alpha": 16}]
    assert tree["list"][0] is not tree["base"]  # aliases are copied, not shared
    assert pos[("lora", "alpha")].line == 4 and pos[("lora", "r")].line == 1


ROUND_TRIP = {
    "model": {"name_or_path": "tiny-clip", "revision": None},
    "adapters": {"lora": {"r": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}},
    "objectives": [{"_component_": "contrastive", "weight": 1.0}, {"_component_": "kl", "weight": 1e-4}],
    "floats": [1e-10, 1e20, -0.0, 3.0, math.inf, 123456789.123, 0.1],
    "strings": ["no", "yes", "on", "off", "y", "N", "true", "null", "~", "", " x", "1e-4", "0x10", "017", "1_000",
                "1:30", "2024-01-01", "=", "#c", "- a", "a: b", "multi\nline", "ünï", "[1]"],
    "ints": [0, -3, 2**70],
    "nested": {"empty_map": {}, "empty_list": [], "deep": [[1, 2], [{"a": [True, False]}]]},
    7: "int key",
    "long": ["x" * 30] * 5,
}


def test_dump_round_trips_and_keeps_order():
    text = dump_yaml(ROUND_TRIP)
    tree, _ = loads_yaml(text)
    assert tree == ROUND_TRIP
    assert list(tree) == list(ROUND_TRIP)
    assert dump_yaml(tree) == text


def test_dump_is_readable():
    text = dump_yaml({"train": {"learning_rate": 1e-3, "report_to": "no"}, "targets": ["q", "v"],
                      "objectives": [{"_component_": "contrastive", "weight": 1.0}]})
    assert text == (
        "train:\n"
        "  learning_rate: 0.001\n"
        "  report_to: 'no'\n"
        "targets: [q, v]\n"
        "objectives:\n"
        "  - _component_: contrastive\n"
        "    weight: 1.0\n"
    )


def test_dump_is_safe_for_yaml_1_1_readers():
    yaml = pytest.importorskip("yaml")  # PyYAML reads YAML 1.1
    strings = {"s": ROUND_TRIP["strings"], "f": [1e-4, 1e-10, 2.5]}
    assert yaml.safe_load(dump_yaml(strings)) == strings


def test_dump_converts_tuples_and_paths_and_rejects_objects():
    assert loads_yaml(dump_yaml({"a": (1, 2), "p": pathlib.Path("runs/x")}))[0] == {"a": [1, 2], "p": "runs/x"}
    with pytest.raises(TypeError, match="cannot dump object at 'a.0'"):
        dump_yaml({"a": [object()]})
