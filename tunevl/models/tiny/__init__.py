"""Built-in tiny models, one file per family: random weights at hidden sizes of 32-64, built offline and
deterministically, loaded through the same ``from_pretrained`` path as real checkpoints.

``"tiny-clip"`` is shipped pretrained in ``tunevl/assets`` (checked against its SHA-256 manifest); the
others are built on first use and saved once into ``$TUNEVL_CACHE`` (default ``~/.cache/tunevl``).
:func:`resolve_builtin` maps a tiny name to its folder and passes any other name through.
"""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path

from tunevl.models.registry import FAMILIES
from tunevl.models.tiny._lvlm import BUILD_VERSION
from tunevl.models.tiny._store import (
    MANIFEST,
    BuiltinModelError,
    build_once,
    cache_dir,
    sha256_file,
    verify_manifest,
    write_manifest,
)
from tunevl.models.tiny.clip import BOS, EOS, PAD, TINY_CLIP_SPEC, build_tiny_clip, build_tiny_tokenizer, save_tiny_clip

__all__ = [
    "BUILTIN_MODELS", "BUILT_ON_DEMAND", "BuiltinModelError", "MANIFEST", "TINY_CLIP_SPEC", "TINY_LVLMS",
    "build_tiny_clip", "build_tiny_tokenizer", "cache_dir", "ensure_tiny", "resolve", "resolve_builtin",
    "save_tiny_clip", "sha256_file", "verify_manifest", "write_manifest", "BOS", "EOS", "PAD",
]

#: Builtin alias -> folder under ``tunevl/assets``.
BUILTIN_MODELS: dict[str, str] = {"tiny-clip": "tiny-clip"}

#: Tiny models built by a family's builder: name -> ``module:builder`` returning ``(model, processor)``
#: (the family registry's ``tiny`` entries).
TINY_LVLMS: dict[str, str] = {name: spec for fam in FAMILIES.values() for name, spec in fam.tiny.items()}

#: Tiny models built on first use (name -> ``module:function`` returning their folder).
BUILT_ON_DEMAND: dict[str, str] = {"tiny-siglip": "tunevl.models.tiny.siglip:ensure_tiny_siglip", **dict.fromkeys(TINY_LVLMS)}


def _import(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def ensure_tiny(name: str) -> str:
    """Build and save the tiny LVLM ``name`` once (atomically); return its folder."""
    if name not in TINY_LVLMS:
        raise ValueError(f"unknown tiny model {name!r}; known: {sorted(TINY_LVLMS)}")
    return build_once(name, BUILD_VERSION, _import(TINY_LVLMS[name]))


def resolve_builtin(name_or_path: str) -> str:
    """Map a builtin alias (``"tiny-clip"``, ``"tiny-llava"``...) to its folder, building it first if needed.

    Any other string (a local path or Hub id) is returned unchanged. An alias wins
    over a local folder of the same name; use ``./tiny-clip`` for the folder.

    Raises:
        BuiltinModelError: the shipped files fail their SHA-256 check.
    """
    if name_or_path in TINY_LVLMS:
        return ensure_tiny(name_or_path)
    if name_or_path in BUILT_ON_DEMAND:
        return _import(BUILT_ON_DEMAND[name_or_path])()
    if name_or_path not in BUILTIN_MODELS:
        return name_or_path
    folder = Path(str(resources.files("tunevl") / "assets" / BUILTIN_MODELS[name_or_path])).resolve()
    verify_manifest(folder)
    return str(folder)


resolve = resolve_builtin  # the name tunevl.models.tiny_lvlm used
