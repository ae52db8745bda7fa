"""The recipe schema: which callable each YAML node is, checked without building anything.

::

    model:       tunevl.models.ModelConfig
    adapters:
      lora:      peft.LoraConfig   (target_modules may name family presets)
      soft_prompt: tunevl.adapters.soft_prompt.SoftPromptConfig (generative families)
      embedding_prompts: tunevl.adapters.embedding_prompts.EmbeddingPromptsConfig (generative families: VladVA)
      coop / cocoop / visual_prompt: tunevl.adapters.prompts.PROMPT_KINDS (dual encoders)
    objectives:  list of {_component_: <name in tunevl.objectives.OBJECTIVES or dotted path>, ...}
    data:
      train:     {_component_: <name in tunevl.data.DATASETS or dotted path>, ...}
      eval:      same, optional
    train:       tunevl.train.TrainConfig
    eval:        tunevl.train.EvalConfig
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunevl.config.check import Kind, check_call, check_component, resolve_component
from tunevl.config.errors import RecipeError, RecipeProblems, as_path, format_path, nearest
from tunevl.config.overrides import apply_overrides
from tunevl.config.yaml12 import dump_yaml, load_yaml

TOP_LEVEL = ("description", "model", "adapters", "objectives", "data", "train", "eval")
ADAPTER_KINDS = ("lora", "soft_prompt", "embedding_prompts", "coop", "cocoop", "visual_prompt")
DATA_SPLITS = ("train", "eval")


def _soft_prompt_config_cls():
    from tunevl.adapters.soft_prompt import SoftPromptConfig

    return SoftPromptConfig


def _embedding_prompts_config_cls():
    from tunevl.adapters.embedding_prompts import EmbeddingPromptsConfig

    return EmbeddingPromptsConfig


def _prompt_config_cls(kind: str):
    from tunevl.adapters.prompts import PROMPT_KINDS

    return PROMPT_KINDS[kind]


def _lora_config_cls():
    """``peft.LoraConfig``'s fields, read from peft's source: importing peft takes seconds (torch, transformers)."""
    from tunevl.config.lazy_signature import dataclass_fields

    return dataclass_fields("peft", "tuners/lora/config", "LoraConfig", (("config", "PeftConfigMixin"), ("config", "PeftConfig")))


@dataclass
class Recipe:
    """A parsed recipe: the plain tree plus where every key came from (for error messages)."""

    tree: dict[str, Any]
    file: str | None = None
    positions: dict = field(default_factory=dict)

    # ---- reading ---------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> "Recipe":
        tree, positions = load_yaml(path)
        if not isinstance(tree, dict):
            raise RecipeError("the recipe must be a mapping of sections", file=str(path), line=1)
        tree = apply_overrides(tree, list(overrides), positions)
        return cls(tree, str(path), positions)

    @classmethod
    def from_dict(cls, tree: dict, overrides: list[str] | tuple[str, ...] = ()) -> "Recipe":
        positions: dict = {}
        return cls(apply_overrides(dict(tree), list(overrides), positions), None, positions)

    def to_yaml(self) -> str:
        return dump_yaml(self.tree)

    def error(self, key: tuple, message: str) -> RecipeError:
        return RecipeError.at(self.positions, key, message, file=self.file)

    def _section(self, name: str, default=None):
        return self.tree.get(name, default)

    # ---- validation ------------------------------------------------------------------
    def validate(self, all_problems: bool = False) -> None:
        """Check every node against its callable's signature and types; build nothing, download nothing.

        Args:
            all_problems: Report every problem (as :class:`RecipeProblems`), not just the first.
        """
        problems: list[RecipeError] = []
        self._errors = problems if all_problems else None

        def attempt(check, *args) -> None:
            try:
                check(*args)
            except RecipeError as err:
                if not all_problems:
                    raise
                problems.append(err)

        attempt(self._check_sections)
        if problems:  # the rest needs the sections
            raise RecipeProblems(problems)
        from tunevl.models import ModelConfig
        from tunevl.train.config import EvalConfig, TrainConfig

        attempt(self._check, ("model",), ModelConfig)
        attempt(self._check, ("train",), TrainConfig)
        if "eval" in self.tree:
            attempt(self._check, ("eval",), EvalConfig)
            attempt(self._check_benchmarks)
        attempt(self._check_adapters)
        attempt(self._check_objectives)
        attempt(self._check_data)
        if not problems:  # the family checks resolve components the steps above vouch for
            attempt(self._check_family)
            attempt(self._check_deepspeed)
        if not problems:  # the rules read values whose types are vouched for
            from tunevl.config.rules import rules

            for rule in rules():
                attempt(rule, self)
        if problems:
            raise problems[0] if len(problems) == 1 else RecipeProblems(problems)

    def _check_sections(self) -> None:
        for key in self.tree:
            if key not in TOP_LEVEL:
                hint = nearest(key, TOP_LEVEL)
                raise self.error((key,), f"unknown section{f'; did you mean {hint!r}?' if hint else ''} (sections: {', '.join(TOP_LEVEL)})")
        for required in ("model", "objectives", "data", "train"):
            if required not in self.tree:
                raise self.error((), f"missing section {required!r}")

    def _check_adapters(self) -> None:
        adapters = self._mapping(("adapters",), required=False)
        for kind in adapters:
            if kind not in ADAPTER_KINDS:
                hint = nearest(kind, ADAPTER_KINDS)
                raise self.error(("adapters", kind), f"unknown adapter kind{f'; did you mean {hint!r}?' if hint else ''} (kinds: {', '.join(ADAPTER_KINDS)})")
        if "lora" in adapters:
            self._check(("adapters", "lora"), _lora_config_cls())
        if "soft_prompt" in adapters:
            self._check(("adapters", "soft_prompt"), _soft_prompt_config_cls())
        for kind in ("coop", "cocoop", "visual_prompt"):
            if kind in adapters:
                self._check(("adapters", kind), _prompt_config_cls(kind))
        if "coop" in adapters and "cocoop" in adapters:
            raise self.error(("adapters", "cocoop"), "adapters.coop and adapters.cocoop exclude each other; keep one")
        if "embedding_prompts" in adapters:
            self._check(("adapters", "embedding_prompts"), _embedding_prompts_config_cls())
            if "soft_prompt" in adapters:
                raise self.error(("adapters", "soft_prompt"), "an embedder (adapters.embedding_prompts) has soft prompts "
                                 "of its own (its soft: true); drop adapters.soft_prompt")

    def _check_objectives(self) -> None:
        objectives = self.tree["objectives"]
        if not isinstance(objectives, list) or not objectives:
            raise self.error(("objectives",), "must be a non-empty list of objective nodes")
        adapters = self.tree.get("adapters") or {}
        for i in range(len(objectives)):
            cls = self._check_component(("objectives", i), _objective_registry())
            needs = getattr(cls, "needs_adapter", None)
            if needs and needs not in adapters:
                raise self.error(("objectives", i, "_component_"), f"{objectives[i]['_component_']!r} needs adapters.{needs}")

    def _check_data(self) -> None:
        data = self._mapping(("data",), required=True)
        for split in data:
            if split not in DATA_SPLITS:
                raise self.error(("data", split), f"unknown data split (splits: {', '.join(DATA_SPLITS)})")
        if "train" not in data:
            raise self.error(("data",), "missing data.train")
        for split in data:
            self._check_data_node(("data", split))

    def _check_data_node(self, key: tuple) -> None:
        """A data node, and the data nodes nested in it (``few_shot``'s ``source``)."""
        if self._check_component(key, _dataset_registry()) is None:
            return
        for name, value in self._node(key).items():
            if isinstance(value, dict) and "_component_" in value:
                self._check_data_node(key + (name,))

    def _check_benchmarks(self) -> None:
        from tunevl.eval.benchmarks import BENCHMARKS

        nodes = (self.tree.get("eval") or {}).get("benchmarks") or []
        for i in range(len(nodes) if isinstance(nodes, list) else 0):
            self._check_component(("eval", "benchmarks", i), BENCHMARKS)

    def _mapping(self, key: tuple, required: bool) -> dict:
        node = self.tree
        for k in key:
            node = node.get(k) if isinstance(node, dict) else None
        if node is None and not required:
            return {}
        if not isinstance(node, dict):
            raise self.error(key, f"expected a mapping, got {type(node).__name__}")
        return node

    def _node(self, key: tuple) -> Any:
        node: Any = self.tree
        for k in key:
            node = node[k]
        return node

    def _check(self, key: tuple, fn) -> None:
        node = self._node(key)
        if node is None:
            node = {}
        if not isinstance(node, dict):
            raise self.error(key, f"expected a mapping of arguments, got {type(node).__name__}")
        check_call(fn, node, key=key, positions=self.positions, file=self.file, errors=getattr(self, "_errors", None))

    def _check_component(self, key: tuple, registry: dict):
        return check_component(self._node(key), registry, key=key, positions=self.positions, file=self.file,
                               errors=getattr(self, "_errors", None), kind=_kind(key[0]))

    def _check_family(self) -> None:
        from tunevl.errors import UnsupportedModelError
        from tunevl.models import detect_family, family_kind
        from tunevl.models.registry import GENERATIVE_KIND

        model = self.tree["model"]
        try:
            family = detect_family(model["name_or_path"], model.get("family"), model.get("revision"))
        except UnsupportedModelError as err:
            raise self.error(("model", "family" if "model.family" in str(err) or "model family" in str(err) else "name_or_path"),
                             str(err)) from None
        self.family = family
        if family is None:
            return  # no config.json at hand and no model.family: load_view reads the config when it builds the model
        for i, node in enumerate(self.tree["objectives"]):
            cls = resolve_component(node["_component_"], _objective_registry(), kind=_kind("objectives"))
            if getattr(cls, "families", None) and family not in cls.families:
                raise self.error(("objectives", i, "_component_"), f"{node['_component_']!r} cannot train a {family} model (it serves: {', '.join(cls.families)})")
        from tunevl.adapters.prompts import PROMPT_FAMILIES

        for kind in ("coop", "cocoop", "visual_prompt"):
            if kind in (self.tree.get("adapters") or {}) and family not in PROMPT_FAMILIES:
                raise self.error(("adapters", kind), f"prompt adapters serve dual encoders ({', '.join(PROMPT_FAMILIES)}), "
                                                     f"not this {family} model")

        if "embedding_prompts" in (self.tree.get("adapters") or {}) and family_kind(family) != GENERATIVE_KIND:
            raise self.error(("adapters", "embedding_prompts"), f"embedding prompts make a generative LVLM an embedder; "
                             f"{family} is a {family_kind(family).replace('_', ' ')} already")
        lora = self.tree.get("adapters", {}).get("lora") or {}
        targets = lora.get("target_modules")
        items = [targets] if isinstance(targets, str) else list(targets or [])
        presets = _preset_names(family)
        for item in items:
            # A bare word is a preset or a module name; one with '-' can only be a (misspelled) preset.
            looks_like_preset = isinstance(targets, str) and not any(c in item for c in "\\.*") or "-" in item
            if looks_like_preset and item not in presets and item != "all-linear":
                hint = nearest(item, list(presets))
                raise self.error(("adapters", "lora", "target_modules"), f"{item!r} is not a {family} preset{f'; did you mean {hint!r}?' if hint else ''} (presets: {', '.join(sorted(presets))}; or give a list of module names or a regex)")
        self._check_quantization(family)

    def _check_quantization(self, family: str) -> None:
        """``model.quantization``: BitsAndBytesConfig keys, a generative family, LoRA to train, no DeepSpeed."""
        settings = self.tree["model"].get("quantization")
        if not settings:
            return
        import inspect

        from transformers import BitsAndBytesConfig

        from tunevl.models import family_kind

        key = ("model", "quantization")
        if not isinstance(settings, dict):
            raise self.error(key, "expected a mapping of transformers.BitsAndBytesConfig arguments")
        known = [n for n, p in inspect.signature(BitsAndBytesConfig).parameters.items() if p.kind is not p.VAR_KEYWORD]
        for name in settings:
            if name not in known:
                hint = nearest(name, known)
                raise self.error((*key, name), f"not a BitsAndBytesConfig argument{f'; did you mean {hint!r}?' if hint else ''}")
        if not (settings.get("load_in_4bit") or settings.get("load_in_8bit")):
            raise self.error(key, "set load_in_4bit: true (QLoRA) or load_in_8bit: true")
        if family_kind(family) != "generative":
            raise self.error(key, f"quantization (QLoRA) is for generative families; {family} trains in full precision")
        if not (self.tree.get("adapters") or {}).get("lora"):
            raise self.error(key, "a quantised base trains LoRA (adapters.lora); a soft prompt alone needs no quantisation")
        if (self.tree.get("train") or {}).get("deepspeed"):
            raise self.error(key, "QLoRA runs on one GPU or under torchrun (DDP); DeepSpeed ZeRO cannot partition "
                                  "bitsandbytes weights: remove train.deepspeed")

    def _check_deepspeed(self) -> None:
        """A DeepSpeed JSON that disagrees with the recipe (checks needing the world size wait for ``train``)."""
        value = (self.tree.get("train") or {}).get("deepspeed")
        if not value:
            return
        from tunevl.train.deepspeed_config import deepspeed_conflicts, read_deepspeed_config

        try:
            path, ds = read_deepspeed_config(value)
        except (RecipeError, FileNotFoundError):
            return  # a missing file or preset, or bad JSON: reported by the rules (config/rules.py _deepspeed)
        problems = deepspeed_conflicts(ds, self.train_config(), world_size=None, bf16=None)
        if problems:
            raise self.error(("train", "deepspeed"), f"{path}: " + "; ".join(problems))

    # ---- building --------------------------------------------------------------------
    @contextlib.contextmanager
    def building(self, key: tuple):
        """Within the context, a ``ValueError`` is a bad value of the recipe node at ``key``: it is
        re-raised as a :class:`RecipeError` located there (tunevl's own error types pass through)."""
        from tunevl.errors import BundleError, DataError

        try:
            yield
        except (RecipeError, DataError, BundleError):
            raise
        except ValueError as err:
            message = " ".join(str(err).split())
            named, sep, rest = message.partition(": ")  # a message that names a key inside the node
            if sep and (named == format_path(key) or named.startswith(format_path(key) + ".")) and " " not in named:
                key, message = as_path(named), rest
            raise self.error(key, message) from err

    def model_config(self):
        from tunevl.models import ModelConfig

        with self.building(("model",)):
            return ModelConfig(**self.tree["model"])

    def train_config(self):
        from tunevl.train.config import TrainConfig

        with self.building(("train",)):
            return TrainConfig(**(self.tree.get("train") or {}))

    def eval_config(self):
        from tunevl.train.config import EvalConfig

        with self.building(("eval",)):
            return EvalConfig(**(self.tree.get("eval") or {}))

    def soft_prompt(self) -> dict | None:
        node = (self.tree.get("adapters") or {}).get("soft_prompt")
        return dict(node) if node is not None else None

    def embedding_prompts(self) -> dict | None:
        node = (self.tree.get("adapters") or {}).get("embedding_prompts", False)
        return None if node is False else dict(node or {})

    def lora(self) -> dict | None:
        node = (self.tree.get("adapters") or {}).get("lora")
        return dict(node) if node is not None else None

    def build_objectives(self) -> list:
        out = []
        for i, node in enumerate(self.tree["objectives"]):
            with self.building(("objectives", i)):
                out.append(self._instantiate(("objectives", i), _objective_registry()))
        return out

    def build_dataset(self, split: str):
        node = (self.tree.get("data") or {}).get(split)
        if node is None:
            return None
        with self.building(("data", split)):
            return self._instantiate(("data", split), _dataset_registry())

    def _instantiate(self, key: tuple, registry: dict):
        """Build the ``_component_`` node at ``key``: only a registered name or a class of the node's kind."""
        node = self._node(key)
        fn = resolve_component(node["_component_"], registry, key=key + ("_component_",), positions=self.positions,
                               file=self.file, kind=_kind(key[0]))
        return fn(**{k: v for k, v in node.items() if k != "_component_"})


def _preset_names(family: str) -> list[str]:
    """LoRA preset names of a family (read from the view's source: importing it may import transformers)."""
    from tunevl.config.lazy_signature import dict_keys
    from tunevl.models import FAMILIES

    module, cls = FAMILIES[family].view.split(":")
    names = [dict_keys(module, cls, attr) for attr in ("lora_presets", "lora_modules_to_save_presets")]
    if names[0] is None:
        from tunevl.models import get_family

        view = get_family(family)
        return [*view.lora_presets, *getattr(view, "lora_modules_to_save_presets", {})]
    return [*names[0], *(names[1] or [])]


def is_dataset_class(cls: type) -> bool:
    """A map-style dataset class (``__len__`` and ``__getitem__``) defined outside the standard library."""
    def outside_stdlib(c: type) -> bool:
        top = (c.__module__ or "").split(".")[0]
        return top != "builtins" and top not in sys.stdlib_module_names

    if not outside_stdlib(cls) or any(issubclass(cls, t) for t in (str, bytes, list, tuple, dict, set)):
        return False
    return all(any(attr in vars(c) for c in cls.__mro__ if outside_stdlib(c)) for attr in ("__len__", "__getitem__"))


def _is_objective(cls: type) -> bool:
    from tunevl.objectives.base import Objective

    return issubclass(cls, Objective)


def _is_benchmark(cls: type) -> bool:
    from tunevl.eval.benchmarks.base import Benchmark

    return issubclass(cls, Benchmark)


#: What a dotted ``_component_`` path may name, per recipe section (``eval``: its ``benchmarks`` entries).
KINDS = {
    "objectives": Kind("an Objective subclass (tunevl.objectives.Objective)", _is_objective),
    "data": Kind("a map-style dataset class (with __len__ and __getitem__)", is_dataset_class),
    "eval": Kind("a Benchmark subclass (tunevl.eval.benchmarks.base.Benchmark)", _is_benchmark),
}


def _kind(section) -> Kind:
    return KINDS[section]


def _objective_registry() -> dict:
    from tunevl.objectives import OBJECTIVES

    return OBJECTIVES


def _dataset_registry() -> dict:
    from tunevl.data import DATASETS

    return DATASETS
