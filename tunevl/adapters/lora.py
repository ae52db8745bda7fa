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
    requested, to_save = _modules_to_save_presets(view, requested)
    if to_save:
        kwargs["modules_to_save"] = list(kwargs.get("modules_to_save") or []) + to_save
    targets = resolve_targets(requested, view.lora_presets)
    if not isinstance(requested, str):  # each listed preset or name must match on its own
        for item in requested:
            pattern = view.lora_presets.get(item, rf"(.*\.)?{re.escape(item)}")
            if not matching_modules(view.base_model, pattern):
                raise ValueError(f"adapters.lora.target_modules: {item!r} matches no module of this {view.family} model; "
                                 f"presets: {sorted(view.lora_presets)}")
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


def _modules_to_save_presets(view, requested):
    """Split presets that train whole modules (``projector``) off ``target_modules``; check they match."""
    presets = getattr(view, "lora_modules_to_save_presets", {})
    items = [requested] if isinstance(requested, str) else list(requested)
    to_save = [name for t in items if t in presets for name in presets[t]]
    if not to_save:
        return requested, []
    rest = [t for t in items if t not in presets]
    if not rest:
        raise ValueError(
            f"adapters.lora.target_modules={requested!r} names only whole-module presets; add a LoRA preset "
            f"(presets for {view.family}: {sorted(view.lora_presets)})"
        )
    names = [n for n, _ in view.base_model.named_modules()]
    for module in to_save:
        if not any(n == module or n.endswith("." + module) for n in names):
            raise ValueError(f"adapters.lora.target_modules: preset module {module!r} matches nothing in this {view.family} model")
    return rest, to_save


def is_adapter_key(name: str) -> bool:
    """True for state-dict keys of a peft model that belong in its adapter: LoRA weights and modules_to_save copies."""
    return "lora_" in name or ".modules_to_save." in name


def adapter_parameter_count(model: nn.Module) -> int:
    """Parameters of a peft model that ``adapter_model.safetensors`` stores (one tensor each)."""
    return sum(1 for n, _ in model.named_parameters() if is_adapter_key(n))
