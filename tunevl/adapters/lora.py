"""LoRA through peft, with per-family target presets (Hu et al. 2021, https://arxiv.org/abs/2106.09685).

The ``adapters.lora`` recipe node holds ``peft.LoraConfig`` fields unchanged. The one
addition: ``target_modules`` may name presets of the model's family (``attention``,
``text-attention``, ...), alone or mixed with module names in a list.
"""

from __future__ import annotations

import re

from torch import nn

_LORA_LAYER_TYPES = (nn.Linear, nn.Conv2d, nn.Embedding, nn.Conv1d)


def resolve_targets(target_modules, presets: dict[str, str]):
    """Turn preset names into one regex peft understands; other values pass through.

    Returns ``target_modules`` unchanged when it names no preset (a list of module
    names, a regex string, ``"all-linear"`` handled by peft, or None).
    """
    items = [target_modules] if isinstance(target_modules, str) else list(target_modules or [])
    if not any(t in presets for t in items):
        return target_modules
    parts = []
    for t in items:
        if t in presets:
            parts.append(presets[t])
        else:  # a plain module name matches as a dotted suffix, as in peft's list form
            parts.append(rf"(.*\.)?{re.escape(t)}")
    return "|".join(f"(?:{p})" for p in parts) if len(parts) > 1 else parts[0]


def matching_modules(model: nn.Module, targets) -> list[str]:
    """Names of LoRA-capable modules that ``targets`` (regex string or name list) selects."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, _LORA_LAYER_TYPES):
            continue
        if isinstance(targets, str):
            hit = re.fullmatch(targets, name) is not None
        else:
            hit = any(name == t or name.endswith("." + t) for t in targets)
        if hit:
            names.append(name)
    return names


def apply_lora(view, lora: dict) -> None:
    """Inject LoRA into ``view.model`` in place; error if the targets match nothing."""
    from peft import LoraConfig, get_peft_model

    kwargs = dict(lora)
    requested = kwargs.get("target_modules")
    if requested is None:
        raise ValueError(f"adapters.lora.target_modules is required; presets for {view.family}: {sorted(view.lora_presets)}")
    targets = resolve_targets(requested, view.lora_presets)
    if targets != "all-linear":
        hits = matching_modules(view.base_model, targets)
        if not hits:
            raise ValueError(
                f"adapters.lora.target_modules={requested!r} matches no module of this {view.family} model; "
                f"presets: {sorted(view.lora_presets)}"
            )
    kwargs["target_modules"] = targets
    extras = list(view.extra_trainables().values())
    view.model = get_peft_model(view.model, LoraConfig(**kwargs))
    for param in extras:  # peft freezes everything that is not an adapter
        param.requires_grad_(True)
