"""DeepSpeed JSON configs: presets by name, checks against the recipe, ``auto`` values filled from it.

Imports no torch, so ``tunevl validate`` can check a recipe's DeepSpeed JSON quickly.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunevl.config.errors import RecipeError

_PRESETS = Path(__file__).resolve().parent.parent / "recipes" / "deepspeed"


def deepspeed_preset_path(value: str) -> Path:
    """The JSON file of ``train.deepspeed``: a path, or the name of a preset in ``recipes/deepspeed/``."""
    path = Path(value)
    if path.is_file():
        return path
    preset = _PRESETS / f"{value}.json"
    if not preset.is_file():
        names = sorted(p.stem for p in _PRESETS.glob("*.json"))
        raise FileNotFoundError(f"train.deepspeed: {value!r} is neither a file nor a preset ({', '.join(names)})")
    return preset


def read_deepspeed_config(value: str) -> tuple[Path, dict]:
    path = deepspeed_preset_path(value)
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RecipeError(f"{path}:{err.lineno}: not valid JSON: {err.msg}", key="train.deepspeed") from None
    if not isinstance(ds, dict):
        raise RecipeError(f"{path}: a DeepSpeed config is a JSON object", key="train.deepspeed")
    return path, ds


def _auto(value) -> bool:
    return value is None or value == "auto"


def deepspeed_conflicts(ds: dict, cfg, world_size: int | None, bf16: bool | None) -> list[str]:
    """What a DeepSpeed JSON sets explicitly (not ``"auto"``) that disagrees with the recipe, one message each.

    The recipe is the one source of the training settings; the JSON may leave them ``"auto"`` (or out)
    for tunevl to fill. ``world_size``/``bf16`` None skip the checks that need them (``tunevl validate``).
    """
    problems = []

    def check(json_key: str, got, recipe_key: str, want) -> None:
        if not _auto(got) and got != want and not (isinstance(got, (int, float)) and isinstance(want, (int, float))
                                                    and float(got) == float(want)):
            problems.append(f"{json_key}={got!r} but the recipe has {recipe_key}={want!r}; set it to \"auto\" "
                            f"in the JSON (tunevl fills it from the recipe) or make them agree")

    check("train_micro_batch_size_per_gpu", ds.get("train_micro_batch_size_per_gpu"), "train.per_device_train_batch_size",
          cfg.per_device_train_batch_size)
    check("gradient_accumulation_steps", ds.get("gradient_accumulation_steps"), "train.gradient_accumulation_steps",
          cfg.gradient_accumulation_steps)
    if world_size is not None:
        check("train_batch_size", ds.get("train_batch_size"),
              f"train.per_device_train_batch_size x train.gradient_accumulation_steps x {world_size} processes",
              cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world_size)
    check("gradient_clipping", ds.get("gradient_clipping"), "train.max_grad_norm", cfg.max_grad_norm)
    opt = ds.get("optimizer")
    if opt is not None:
        kind = str(opt.get("type", "AdamW"))
        if kind.lower() not in ("adamw", "adam"):
            problems.append(f"optimizer.type={kind!r}: tunevl trains with AdamW (train.learning_rate, adam_beta1/2, "
                            "adam_epsilon, weight_decay); remove the optimizer section or use AdamW")
        params = opt.get("params", {})
        check("optimizer.params.lr", params.get("lr"), "train.learning_rate", cfg.learning_rate)
        check("optimizer.params.betas", params.get("betas"), "train.adam_beta1/adam_beta2",
              [cfg.adam_beta1, cfg.adam_beta2])
        check("optimizer.params.eps", params.get("eps"), "train.adam_epsilon", cfg.adam_epsilon)
        check("optimizer.params.weight_decay", params.get("weight_decay"), "train.weight_decay", cfg.weight_decay)
    if ds.get("scheduler") is not None:
        problems.append("a scheduler section: tunevl schedules the learning rate itself (train.lr_scheduler_type, "
                        "warmup_ratio, warmup_steps); remove it from the JSON")
    if (ds.get("fp16") or {}).get("enabled") not in (None, False, "auto"):
        problems.append("fp16.enabled: fp16 mixed precision is not supported; use bf16 (train.bf16)")
    want_bf16 = cfg.bf16 if cfg.bf16 is not None else bf16
    if want_bf16 is not None:
        check("bf16.enabled", (ds.get("bf16") or {}).get("enabled"), "train.bf16", want_bf16)
    return problems


def resolve_deepspeed_config(value: str, cfg, dist_info, bf16: bool) -> dict:
    """Read a DeepSpeed JSON (path or preset name), check it against the recipe and fill its ``auto`` values.

    Raises:
        RecipeError: One line naming each value that disagrees with the recipe, before anything is loaded.
    """
    path, ds = read_deepspeed_config(value)
    problems = deepspeed_conflicts(ds, cfg, dist_info.world_size, bf16)
    if problems:
        raise RecipeError(f"{path}: " + "; ".join(problems), key="train.deepspeed")
    fill = {
        "train_micro_batch_size_per_gpu": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "train_batch_size": cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * dist_info.world_size,
        "gradient_clipping": cfg.max_grad_norm,
    }
    for key, val in fill.items():
        if _auto(ds.get(key)):
            ds[key] = val
    ds.setdefault("bf16", {})
    ds["bf16"]["enabled"] = bf16
    opt = ds.setdefault("optimizer", {"type": "AdamW", "params": {}})
    params = opt.setdefault("params", {})
    for key, val in {
        "lr": cfg.learning_rate,
        "betas": [cfg.adam_beta1, cfg.adam_beta2],
        "eps": cfg.adam_epsilon,
        "weight_decay": cfg.weight_decay,
    }.items():
        if _auto(params.get(key)):
            params[key] = val
    if dist_info.device.type == "cpu":
        params.setdefault("torch_adam", True)  # DeepSpeed's fused Adam needs a long JIT build on CPU
    ds.setdefault("steps_per_print", 10**9)
    return ds


def is_zero3(ds_config: dict | None) -> bool:
    return bool(ds_config) and ds_config.get("zero_optimization", {}).get("stage", 0) == 3
