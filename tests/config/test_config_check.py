"""Signature and type checks of recipe nodes (tunevl.config.check)."""

from __future__ import annotations  # every annotation below is a string, resolved by check_call

import dataclasses
import enum
import pathlib
import sys
import typing
from typing import Any, Literal, Optional, Union

import peft
import pytest

from tunevl.config.check import (
    check_call,
    check_component,
    check_value,
    describe,
    resolve_component,
    type_name,
)
from tunevl.config.errors import RecipeError, nearest
from tunevl.config.yaml12 import loads_yaml


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclasses.dataclass
class Schedule:
    name: Literal["cosine", "linear"] = "cosine"
    warmup: float = 0.0


@dataclasses.dataclass
class Inner:
    steps: int
    schedule: Schedule = dataclasses.field(default_factory=Schedule)


def sample(
    name: str,
    steps: int,
    lr: float = 1e-3,
    flag: bool = False,
    maybe: Optional[int] = None,
    either: Union[int, str] = 0,
    pipe: list[int] | None = None,
    kind: Literal["a", "b"] = "a",
    tags: list[str] = (),
    pair: tuple[int, float] = (0, 0.0),
    many: tuple[int, ...] = (),
    table: dict[str, list[int]] = None,
    path: pathlib.Path = pathlib.Path("."),
    mode: Mode = Mode.FAST,
    inner: Inner | None = None,
    anything: Any = None,
    untyped=None,
    seq: typing.Sequence[float] = (),
    *,
    only_kw: int = 1,
) -> None:
    """A function with rich annotations."""


GOOD = {
    "name": "x",
    "steps": 3,
    "lr": 3,  # int is accepted where float is expected
    "flag": True,
    "maybe": None,
    "either": "s",
    "pipe": [1, 2],
    "kind": "b",
    "tags": [],
    "pair": [1, 2.5],
    "many": [1, 2, 3],
    "table": {"a": [1], "b": []},
    "path": "runs/x",
    "mode": "slow",
    "inner": {"steps": 2, "schedule": {"name": "linear", "warmup": 0.1}},
    "anything": {"x": object()},
    "untyped": [1, "a"],
    "seq": [1, 2.0],
    "only_kw": 2,
}


def check_sample(kwargs):
    check_call(sample, kwargs, key=("node",), file="r.yaml")


def test_sample_accepts_good_values():
    check_sample(GOOD)
    check_sample({"name": "x", "steps": 1})
    check_sample({**GOOD, "mode": Mode.SLOW, "path": pathlib.Path("p"), "inner": Inner(1)})
    check_sample({**GOOD, "mode": "FAST"})  # a member name works too


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"nmae": "x"}, "node.nmae: unknown key; did you mean 'name'?"),
        ({"steps": 2.0}, "node.steps: expected int, got float 2.0"),
        ({"steps": True}, "node.steps: expected int, got bool True"),
        ({"lr": False}, "node.lr: expected float, got bool False"),
        ({"lr": "1e-3"}, "node.lr: expected float, got str '1e-3'"),
        ({"flag": "no"}, "node.flag: expected bool, got str 'no'"),
        ({"flag": 1}, "node.flag: expected bool, got int 1"),
        ({"name": 5}, "node.name: expected str, got int 5"),
        ({"maybe": "x"}, "node.maybe: expected int or None, got str 'x'"),
        ({"either": 1.5}, "node.either: expected int or str, got float 1.5"),
        ({"pipe": [1, "a"]}, "node.pipe.1: expected int, got str 'a'"),
        ({"pipe": 3}, "node.pipe: expected list[int] or None, got int 3"),
        ({"kind": "c"}, "node.kind: expected one of 'a', 'b', got str 'c'"),
        ({"tags": "a"}, "node.tags: expected list[str], got str 'a'"),
        ({"pair": [1]}, "node.pair: expected tuple[int, float], got list [1] of length 1"),
        ({"pair": [1, "x"]}, "node.pair.1: expected float, got str 'x'"),
        ({"many": [1, None]}, "node.many.1: expected int, got None"),
        ({"table": {"a": [1, 2.5]}}, "node.table.a.1: expected int, got float 2.5"),
        ({"table": {1: [1]}}, "node.table.1: invalid key: expected str, got int 1"),
        ({"table": [1]}, "node.table: expected dict[str, list[int]], got list [1]"),
        ({"path": 3}, "node.path: expected path, got int 3"),
        ({"mode": "fsat"}, "node.mode: expected one of 'fast', 'slow', got str 'fsat'; did you mean 'fast'?"),
        ({"inner": {"stpes": 1}}, "node.inner.stpes: unknown key; did you mean 'steps'?"),
        ({"inner": {}}, "node.inner: missing required key 'steps' for Inner"),
        ({"inner": {"steps": 1, "schedule": {"name": "cosin"}}},
         "node.inner.schedule.name: expected one of 'cosine', 'linear', got str 'cosin'; did you mean 'cosine'?"),
        ({"inner": 3}, "node.inner: expected Inner or None, got int 3"),
        ({"seq": "abc"}, "node.seq: expected Sequence[float], got str 'abc'"),
        ({"only_kw": "1"}, "node.only_kw: expected int, got str '1'"),
    ],
)
def test_sample_rejects_bad_values_with_one_line_messages(changes, message):
    with pytest.raises(RecipeError) as info:
        check_sample({**GOOD, **changes})
    assert str(info.value) == f"r.yaml: {message}"


def test_missing_required_is_reported_at_the_node():
    with pytest.raises(RecipeError) as info:
        check_sample({"name": "x"})
    assert str(info.value) == "r.yaml: node: missing required key 'steps' for sample"


def test_errors_carry_file_and_line_from_positions():
    text = "model: {}\nadapters:\n  lora:\n    r: 8\n    rr: 4\n"
    tree, pos = loads_yaml(text, file="recipes/x.yaml")
    with pytest.raises(RecipeError) as info:
        check_call(peft.LoraConfig, tree["adapters"]["lora"], key=("adapters", "lora"), positions=pos)
    err = info.value
    assert str(err) == "recipes/x.yaml:5: adapters.lora.rr: unknown key; did you mean 'r'?"
    assert (err.file, err.line, err.key, err.message) == (
        "recipes/x.yaml", 5, "adapters.lora.rr", "unknown key; did you mean 'r'?")


def test_dotted_key_is_accepted():
    with pytest.raises(RecipeError, match=r"^objectives\.0\.wieght: unknown key; did you mean 'weight'\?$"):
        check_call(lambda weight=1.0: None, {"wieght": 2}, key="objectives.0")


# ---------------------------------------------------------------------------- peft.LoraConfig


@pytest.mark.parametrize(
    "kwargs",
    [
        {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "lora_dropout": 0.0},
        {"r": 8, "lora_alpha": 16, "target_modules": "attention"},
        {"target_modules": "all-linear", "bias": "lora_only", "init_lora_weights": "gaussian", "use_rslora": True},
        {"init_lora_weights": False, "layers_to_transform": [0, 1], "layer_replication": [[0, 2], [1, 3]]},
        {"rank_pattern": {"q_proj": 4}, "modules_to_save": ["head"], "task_type": "FEATURE_EXTRACTION"},
        {"runtime_config": {"ephemeral_gpu_offload": True}, "trainable_token_indices": {"embed": [1, 2]}},
        {"loftq_config": {}, "eva_config": {"rho": 2}},
    ],
)
def test_lora_config_accepts(kwargs):
    check_call(peft.LoraConfig, kwargs, key=("adapters", "lora"), file="r.yaml")
    peft.LoraConfig(**{k: v for k, v in kwargs.items() if k != "eva_config"})  # really valid, too


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rr": 8}, "adapters.lora.rr: unknown key; did you mean 'r'?"),
        ({"r": "eight"}, "adapters.lora.r: expected int, got str 'eight'"),
        ({"r": 8.0}, "adapters.lora.r: expected int, got float 8.0"),
        ({"lora_dropout": "0.1"}, "adapters.lora.lora_dropout: expected float, got str '0.1'"),
        ({"use_dora": "yes"}, "adapters.lora.use_dora: expected bool, got str 'yes'"),
        ({"target_modules": ["q_proj", 3]}, "adapters.lora.target_modules.1: expected str, got int 3"),
        ({"target_modules": 3}, "adapters.lora.target_modules: expected list[str], str or None, got int 3"),
        ({"bias": "non"}, "adapters.lora.bias: expected one of 'none', 'all', 'lora_only', got str 'non'; "
                          "did you mean 'none'?"),
        ({"init_lora_weights": "gausian"},
         "adapters.lora.init_lora_weights: expected bool or one of 'gaussian', 'eva', 'olora', 'pissa', "
         "'pissa_niter_[number of iters]', 'corda', 'loftq', 'orthogonal', 'mica', got str 'gausian'; "
         "did you mean 'gaussian'?"),
        ({"layer_replication": [[0, 2], [1]]},
         "adapters.lora.layer_replication.1: expected tuple[int, int], got list [1] of length 1"),
        ({"runtime_config": {"ephemeral_gpu_offload": "no"}},
         "adapters.lora.runtime_config.ephemeral_gpu_offload: expected bool, got str 'no'"),
        ({"eva_config": {"rhoo": 2}}, "adapters.lora.eva_config.rhoo: unknown key; did you mean 'rho'?"),
        ({"trainable_token_indices": {"embed": [1, "x"]}},
         "adapters.lora.trainable_token_indices.embed.1: expected int, got str 'x'"),
    ],
)
def test_lora_config_rejects(kwargs, message):
    with pytest.raises(RecipeError) as info:
        check_call(peft.LoraConfig, kwargs, key=("adapters", "lora"), file="r.yaml")
    assert str(info.value) == f"r.yaml: {message}"


def test_lora_config_unknown_key_without_a_close_match_lists_the_fields():
    with pytest.raises(RecipeError) as info:
        check_call(peft.LoraConfig, {"xyzzy": 1}, key=("lora",))
    assert str(info.value).startswith("lora.xyzzy: unknown key; LoraConfig takes: task_type, peft_type, ")
    assert str(info.value).endswith(" more)")


# ---------------------------------------------------------------------------- signatures


class WithInit:
    def __init__(self, dim: "int", *, scale: "float" = 1.0, **extra):
        pass


class Strict:
    def __init__(self, model, dim: int, /, weight: float = 1.0):
        pass


def test_classes_and_var_kwargs():
    check_call(WithInit, {"dim": 4, "scale": 2, "whatever": "x"}, key="n")  # **extra takes unknown keys
    with pytest.raises(RecipeError, match=r"^n\.scale: expected float, got str 'big'$"):
        check_call(WithInit, {"dim": 4, "scale": "big"}, key="n")


def test_supplied_and_positional_only():
    check_call(Strict, {"weight": 2}, key="o", supplied=("model", "dim"))
    with pytest.raises(RecipeError, match=r"^o: Strict needs positional argument 'model', which a recipe cannot give$"):
        check_call(Strict, {}, key="o", supplied=("dim",))
    with pytest.raises(RecipeError, match=r"^o\.model: set by tunevl at build time; remove it from the recipe$"):
        check_call(Strict, {"model": "x"}, key="o", supplied=("model", "dim"))


def test_unresolvable_annotations_are_accepted():
    def fn(a: "NoSuchType", b: "int"):  # noqa: F821
        pass

    check_call(fn, {"a": object(), "b": 1}, key="n")
    with pytest.raises(RecipeError, match="expected int, got str"):
        check_call(fn, {"a": 1, "b": "1"}, key="n")


def test_errors_can_be_collected():
    errors = []
    check_call(sample, {"nmae": "x", "steps": "3", "lr": None}, key=("n",), errors=errors)
    assert [str(e) for e in errors] == [
        "n.nmae: unknown key; did you mean 'name'?",
        "n.steps: expected int, got str '3'",
        "n.lr: expected float, got None",
        "n: missing required key 'name' for sample",
    ]


def test_node_must_be_a_mapping():
    with pytest.raises(RecipeError, match=r"^n: expected a mapping of arguments for sample, got list \[1\]$"):
        check_call(sample, [1], key="n")


def test_check_value_and_names():
    check_value("runs/x", Optional[pathlib.Path], key="train.output_dir")
    with pytest.raises(RecipeError, match=r"^train\.bf16: expected bool, got str 'yes'$"):
        check_value("yes", bool, key="train.bf16")
    assert type_name(dict[str, tuple[int, ...]]) == "dict[str, tuple[int, ...]]"
    assert type_name(Optional[Union[list[str], str]]) == "list[str], str or None"
    assert describe("x" * 60) == "str '" + "x" * 36 + "..."
    assert nearest("wieght", ["weight", "temperature"]) == "weight" and nearest("zzz", ["weight"]) is None


# ---------------------------------------------------------------------------- components


def contrastive(weight: float = 1.0, temperature: float = 0.07):
    """A stand-in objective builder."""


REGISTRY = {"contrastive": contrastive, "next_token": sample}


def test_resolve_registered_and_dotted_names():
    assert resolve_component("contrastive", REGISTRY) is contrastive
    assert resolve_component("peft.LoraConfig", REGISTRY) is peft.LoraConfig
    assert resolve_component("peft.tuners.lora.config.LoraConfig", REGISTRY) is peft.LoraConfig
    assert resolve_component(f"{__name__}.Inner", REGISTRY) is Inner


@pytest.mark.parametrize(
    "name, message",
    [
        ("contrastiv", "unknown component 'contrastiv'; did you mean 'contrastive'? "
                       "(registered: contrastive, next_token; or give a dotted import path like mypkg.MyClass)"),
        ("zzz", "unknown component 'zzz' (registered: contrastive, next_token; "
                "or give a dotted import path like mypkg.MyClass)"),
        ("no_such_pkg_tunevl.Thing", "cannot import 'no_such_pkg_tunevl.Thing': no module named 'no_such_pkg_tunevl'"),
        ("peft.LoraConfg", "'peft' has no attribute 'LoraConfg'; did you mean 'LoraConfig'?"),
        ("os.sep", "'os.sep' is a str, not a callable"),
        (3, "expected a component name (str), got int 3"),
    ],
)
def test_resolve_errors(name, message):
    text = "objectives:\n  - _component_: x\n"
    _, pos = loads_yaml(text, file="r.yaml")
    with pytest.raises(RecipeError) as info:
        resolve_component(name, REGISTRY, key=("objectives", 0, "_component_"), positions=pos)
    assert str(info.value) == f"r.yaml:2: objectives.0._component_: {message}"


def test_resolve_reports_a_module_that_fails_to_import(tmp_path, monkeypatch):
    (tmp_path / "broken_tunevl_mod.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RecipeError) as info:
        resolve_component("broken_tunevl_mod.Thing", REGISTRY)
    assert str(info.value) == ("cannot import 'broken_tunevl_mod.Thing': "
                               "No module named 'no_such_dependency_xyz'")
    sys.modules.pop("broken_tunevl_mod", None)


def test_check_component():
    assert check_component({"_component_": "contrastive", "weight": 2}, REGISTRY, key="o") is contrastive
    with pytest.raises(RecipeError, match=r"^o: missing '_component_'$"):
        check_component({"weight": 2}, REGISTRY, key="o")
    with pytest.raises(RecipeError, match=r"^o\.temprature: unknown key; did you mean 'temperature'\?$"):
        check_component({"_component_": "contrastive", "temprature": 2}, REGISTRY, key="o")
    errors = []
    assert check_component({"_component_": "nope"}, REGISTRY, key="o", errors=errors) is None
    assert len(errors) == 1 and errors[0].key == "o._component_"
