"""Prompt adapters of dual encoders as recipe kinds: ``adapters.coop``, ``adapters.cocoop``, ``adapters.visual_prompt``.

Each kind is one config dataclass (:data:`PROMPT_KINDS`); any of them combines with ``adapters.lora``
(text prompts and visual prompts combine too; CoOp and CoCoOp exclude each other). Their tensors
are bundle extras (``text_prompts.*``, ``visual_prompts.*``); ``tunevl.json`` records their shapes
under ``prompts`` so :func:`restore_prompts` rebuilds them before the tensors are loaded.
"""

from __future__ import annotations

import contextlib

from tunevl.adapters.coop import (
    CoCoOpConfig,
    CoOpConfig,
    apply_text_prompts,
    restore_text_prompts,
    text_prompt_metadata,
)
from tunevl.adapters.visual_prompt import (
    VisualPromptConfig,
    apply_visual_prompts,
    restore_visual_prompts,
    visual_prompt_metadata,
)

#: Recipe kind -> config dataclass.
PROMPT_KINDS = {"coop": CoOpConfig, "cocoop": CoCoOpConfig, "visual_prompt": VisualPromptConfig}
#: Families whose views take prompt adapters.
PROMPT_FAMILIES = ("clip", "siglip")


def apply_prompt_adapters(view, adapters: dict | None) -> None:
    """Inject the prompt adapters named in a recipe's ``adapters`` section (after LoRA)."""
    adapters = adapters or {}
    kinds = [k for k in PROMPT_KINDS if adapters.get(k) is not None]
    if not kinds:
        return
    if getattr(view, "family", None) not in PROMPT_FAMILIES:
        raise ValueError(f"adapters.{kinds[0]} serves dual encoders ({', '.join(PROMPT_FAMILIES)}), not {view.family}")
    if "coop" in kinds and "cocoop" in kinds:
        raise ValueError("adapters.coop and adapters.cocoop exclude each other; keep one")
    for kind in kinds:
        node = adapters[kind]
        config = node if isinstance(node, PROMPT_KINDS[kind]) else PROMPT_KINDS[kind](**node)
        if kind == "visual_prompt":
            apply_visual_prompts(view, config)
        else:
            apply_text_prompts(view, config)


def prompt_metadata(view) -> dict:
    """The ``prompts`` entry of ``tunevl.json``: shapes and settings of the view's prompts (empty without)."""
    meta = {}
    if getattr(view, "text_prompts", None) is not None:
        meta["text"] = text_prompt_metadata(view.text_prompts)
    if getattr(view, "visual_prompts", None) is not None:
        meta["visual"] = visual_prompt_metadata(view.visual_prompts)
    return meta


def restore_prompts(view, meta: dict) -> None:
    """Rebuild the prompts a bundle recorded (``prompt_metadata``), ready for its extras to be loaded."""
    if meta.get("text"):
        restore_text_prompts(view, meta["text"])
    if meta.get("visual"):
        restore_visual_prompts(view, meta["visual"])


@contextlib.contextmanager
def prompts_disabled(view):
    """Within the context the view computes what its model does without the prompts (LoRA stays)."""
    modules = [m for m in (getattr(view, "text_prompts", None), getattr(view, "visual_prompts", None)) if m is not None]
    previous = [m.enabled for m in modules]
    for m in modules:
        m.enabled = False
    try:
        yield
    finally:
        for m, state in zip(modules, previous):
            m.enabled = state


__all__ = ["PROMPT_FAMILIES", "PROMPT_KINDS", "CoCoOpConfig", "CoOpConfig", "VisualPromptConfig", "apply_prompt_adapters",
           "prompt_metadata", "prompts_disabled", "restore_prompts"]
