"""Recipe rules beyond signatures and types, checked offline by ``tunevl validate``.

Each rule reads the recipe tree (whose types the signature checks have vouched for) and
raises a :class:`RecipeError` located at the offending key:

- values a signature cannot bound: a negative objective weight (it would train on the negated
  loss), a LoRA rank below 1, ``max_steps: 0``;
- names that a dependency would only reject mid-run: the scheduler (transformers'
  ``SchedulerType``), DeepSpeed presets, the image processor's settings in
  ``model.processor_kwargs``;
- the optional packages a recipe needs (``deepspeed``, ``tensorboard``, ``wandb``,
  ``bitsandbytes``), found without importing them;
- a held-out split of the training file (``data.train.eval_split``) next to a ``data.eval``.

Nothing is imported from torch, transformers or peft here: names are read from their sources.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from tunevl.config.errors import RecipeError, did_you_mean

Rule = Callable[[Any], None]

#: family -> (module, class) whose declared names are valid ``model.processor_kwargs`` keys
#: (the image processor's settings and the processor's own), read from transformers' source.
PROCESSOR_SETTINGS: dict[str, list[tuple[str, str]]] = {
    "clip": [("models/clip/processing_clip", "CLIPProcessor")],
    "siglip": [("models/siglip/processing_siglip", "SiglipProcessor")],
    "llava": [("models/llava/processing_llava", "LlavaProcessor")],  # LLaVA-1.5 uses CLIP's image processor
    "qwen2_vl": [("models/qwen2_vl/processing_qwen2_vl", "Qwen2VLProcessor"),
                 ("models/qwen2_vl/image_processing_qwen2_vl", "Qwen2VLImageProcessorKwargs")],
}

#: Keys of ``model:`` whose truthy value means a quantised base (QLoRA): bitsandbytes is needed.
_QUANTISED = ("4bit", "8bit", "quantiz")


def rules() -> Iterator[Rule]:
    """Every rule, in the order their problems are listed."""
    yield from (_model_packages, _processor_kwargs, _lora_values, _objective_weights, _steps, _scheduler,
                _report_to, _deepspeed, _held_out_split)


def _node(recipe, *key) -> Any:
    node = recipe.tree
    for k in key:
        node = node.get(k) if isinstance(node, dict) else None
    return node


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _package_error(recipe, key: tuple, package: str, what: str) -> RecipeError:
    from tunevl.errors import install_hint

    return recipe.error(key, f"{what} needs the '{package}' package, which is not installed: {install_hint(package)}")


def _model_packages(recipe) -> None:
    from tunevl.errors import missing_package

    model = _node(recipe, "model") or {}
    for key, value in model.items():
        if value and any(word in str(key).lower() for word in _QUANTISED) and missing_package("bitsandbytes"):
            raise _package_error(recipe, ("model", key), "bitsandbytes", "a quantised base model")


def _processor_kwargs(recipe) -> None:
    kwargs = _node(recipe, "model", "processor_kwargs")
    family = getattr(recipe, "family", None)
    if not isinstance(kwargs, dict) or not kwargs or family not in PROCESSOR_SETTINGS:
        return
    from tunevl.config.lazy_signature import class_names

    known: set[str] = set()
    for module, cls in [("processing_utils", "ImagesKwargs"), *PROCESSOR_SETTINGS[family]]:
        names = class_names("transformers", module, cls)
        if names is None:
            return  # another transformers layout: the processor itself checks when it is built
        known |= names
    for key in kwargs:
        if key not in known:
            raise recipe.error(("model", "processor_kwargs", key),
                               f"the {family} processor has no setting {key!r}{did_you_mean(key, sorted(known))}")


def _lora_values(recipe) -> None:
    lora = _node(recipe, "adapters", "lora")
    if not isinstance(lora, dict):
        return
    r, alpha, dropout = lora.get("r"), lora.get("lora_alpha"), lora.get("lora_dropout")
    if _number(r) and r < 1:
        raise recipe.error(("adapters", "lora", "r"), f"the LoRA rank must be >= 1, got {r}")
    if _number(alpha) and alpha <= 0:
        raise recipe.error(("adapters", "lora", "lora_alpha"), f"must be > 0, got {alpha}")
    if _number(dropout) and not 0 <= dropout < 1:
        raise recipe.error(("adapters", "lora", "lora_dropout"), f"must be in [0, 1), got {dropout}")


def _objective_weights(recipe) -> None:
    for i, node in enumerate(_node(recipe, "objectives") or []):
        weight = node.get("weight") if isinstance(node, dict) else None
        if _number(weight) and not weight >= 0:
            raise recipe.error(("objectives", i, "weight"),
                               f"must be >= 0, got {weight} (a negative weight would train on the negated loss)")


def _steps(recipe) -> None:
    train = _node(recipe, "train") or {}
    steps, epochs = train.get("max_steps", -1), train.get("num_train_epochs", 1.0)
    if steps == 0:
        raise recipe.error(("train", "max_steps"), "must be > 0, or -1 to derive the steps from num_train_epochs")
    if _number(steps) and steps < 0 and _number(epochs) and epochs <= 0:
        raise recipe.error(("train", "num_train_epochs"), f"must be > 0 when max_steps is -1, got {epochs}")


def scheduler_names() -> frozenset[str] | None:
    """transformers' scheduler names (``SchedulerType`` values), read from its source."""
    from tunevl.config.lazy_signature import class_names

    return class_names("transformers", "trainer_utils", "SchedulerType")


def _scheduler(recipe) -> None:
    name = _node(recipe, "train", "lr_scheduler_type")
    names = scheduler_names()
    if isinstance(name, str) and names and name not in names:
        raise recipe.error(("train", "lr_scheduler_type"),
                           f"unknown scheduler {name!r}{did_you_mean(name, sorted(names))} (schedulers: {', '.join(sorted(names))})")


def _report_to(recipe) -> None:
    from tunevl.errors import missing_package

    value = _node(recipe, "train", "report_to")
    for target in [value] if isinstance(value, str) else list(value or []):
        if target in ("tensorboard", "wandb") and missing_package(target):
            raise _package_error(recipe, ("train", "report_to"), target, f"report_to: {target}")


def deepspeed_presets() -> list[str]:
    from tunevl.config import RECIPES_DIR

    return sorted(p.stem for p in (RECIPES_DIR / "deepspeed").glob("*.json"))


def _deepspeed(recipe) -> None:
    from pathlib import Path

    from tunevl.errors import missing_package

    value = _node(recipe, "train", "deepspeed")
    if not isinstance(value, str):
        return
    key = ("train", "deepspeed")
    path = Path(value).expanduser()
    if path.is_file():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise recipe.error(key, f"cannot read {path}: {err}") from None
        except ValueError as err:
            raise recipe.error(key, f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
        if not isinstance(config, dict):
            raise recipe.error(key, f"{path}: a DeepSpeed config is a JSON object, got {type(config).__name__}")
    elif path.suffix == ".json" or "/" in value or "\\" in value:
        raise recipe.error(key, f"no such file: {path}")
    else:
        presets = deepspeed_presets()
        if value not in presets:
            raise recipe.error(key, f"{value!r} is neither a file nor a preset{did_you_mean(value, presets)} "
                                    f"(presets: {', '.join(presets)})")
    if missing_package("deepspeed"):
        raise _package_error(recipe, key, "deepspeed", "train.deepspeed")


def _held_out_split(recipe) -> None:
    train, held_out = _node(recipe, "data", "train"), _node(recipe, "data", "eval")
    if isinstance(train, dict) and train.get("eval_split") is not None and held_out is not None:
        raise recipe.error(("data", "train", "eval_split"),
                           "data.eval is set as well; evaluate on the held-out split (remove data.eval) or on data.eval "
                           "(remove eval_split)")
