"""Which family view serves a checkpoint, found offline, and the ``model:`` recipe node."""

from __future__ import annotations

import importlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# family name -> "module:ViewClass"; imported lazily so `tunevl validate` stays light.
FAMILIES: dict[str, str] = {
    "clip": "tunevl.models.clip:ClipView",
    "siglip": "tunevl.models.siglip:SiglipView",
    "llava": "tunevl.models.llava:LlavaView",
    "qwen2_vl": "tunevl.models.qwen2_vl:Qwen2VLView",
}

# config.json `model_type` -> family
_MODEL_TYPES = {"clip": "clip", "siglip": "siglip", "llava": "llava", "qwen2_vl": "qwen2_vl"}
# Last resort for hub ids that are not cached locally: recognisable names.
_NAME_PATTERNS = [
    (re.compile(r"siglip", re.I), "siglip"),
    (re.compile(r"clip", re.I), "clip"),
    (re.compile(r"llava", re.I), "llava"),
    (re.compile(r"qwen2-vl", re.I), "qwen2_vl"),
]


@dataclass
class ModelConfig:
    """The ``model:`` node of a recipe.

    Args:
        name_or_path: A Hub id (``openai/clip-vit-base-patch16``), a local folder
            saved with ``save_pretrained``, or a built-in tiny model (``tiny-clip``).
        revision: Hub revision (branch, tag or commit) to load.
        family: Model family (``clip``, ...). Detected from the config when omitted.
        dtype: ``auto`` (bf16 when training in bf16, else fp32), ``float32`` or ``bfloat16``.
        trust_remote_code: Run code shipped with the checkpoint. Off unless you ask.
        train_logit_scale: Train the contrastive temperature alongside the adapters.
        processor_kwargs: Image-processor settings, e.g. the image-token budget of Qwen2-VL
            (``{max_pixels: 401408}``).
        max_length: Truncate token sequences (generative models) to this many tokens; pre-flight
            checks that no truncation cuts into image tokens.
    """

    name_or_path: str
    revision: str | None = None
    family: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    train_logit_scale: bool = False
    processor_kwargs: dict | None = None
    max_length: int | None = None


def _local_config(name_or_path: str, revision: str | None) -> dict | None:
    """Read config.json from a local folder or the HF cache, never from the network."""
    from tunevl.models.tiny import resolve_builtin

    path = Path(resolve_builtin(name_or_path))
    if path.is_dir():
        cfg = path / "config.json"
        return json.loads(cfg.read_text()) if cfg.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json", revision=revision)
    except Exception:  # malformed repo id etc.: not cached
        return None
    if isinstance(cached, (str, os.PathLike)) and Path(cached).is_file():
        return json.loads(Path(cached).read_text())
    return None


DTYPE_NAMES = ("float32", "bfloat16", "float16")


def resolve_dtype(name: str | None, bf16: bool | None = None):
    """The torch dtype of a ``model.dtype`` value.

    ``auto`` (or None) is bf16 when ``bf16`` is true, fp32 when it is false, and when ``bf16`` is None
    (loading for inference) bf16 on a GPU that supports it, else fp32.
    """
    import torch

    if name in (None, "auto"):
        if bf16 is None:
            bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    if name not in DTYPE_NAMES:
        raise ValueError(f"model.dtype must be auto or one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    return getattr(torch, name)


def detect_family(name_or_path: str, family: str | None = None, revision: str | None = None) -> str | None:
    """Return the family of a checkpoint without downloading anything, or None if unknown."""
    if family:
        return family
    cfg = _local_config(name_or_path, revision)
    if cfg is not None and cfg.get("model_type") in _MODEL_TYPES:
        return _MODEL_TYPES[cfg["model_type"]]
    for pattern, fam in _NAME_PATTERNS:
        if pattern.search(name_or_path):
            return fam
    return None


def get_family(name: str):
    """Import and return the view class of a family."""
    if name not in FAMILIES:
        raise ValueError(f"model family {name!r} is not supported yet; supported: {sorted(FAMILIES)}")
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_view(config: ModelConfig, *, torch_dtype=None):
    """Load the checkpoint named by ``config`` and wrap it in its family view."""
    fam = detect_family(config.name_or_path, config.family, config.revision)
    if fam is None:
        raise ValueError(
            f"cannot tell the model family of {config.name_or_path!r}; set model.family "
            f"(one of {sorted(FAMILIES)})"
        )
    return get_family(fam).from_pretrained(config, torch_dtype=torch_dtype)
