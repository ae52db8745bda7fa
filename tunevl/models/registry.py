"""Which family view serves a checkpoint, found offline, and the ``model:`` recipe node."""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tunevl.errors import UnsupportedModelError

DUAL_ENCODER_KIND, GENERATIVE_KIND = "dual_encoder", "generative"


@dataclass(frozen=True)
class Family:
    """One model family: the view that serves it and how its checkpoints are recognised.

    Args:
        view: ``"module:ViewClass"``, imported lazily so ``tunevl validate`` stays light.
        kind: ``dual_encoder`` (embeddings: contrastive objectives, ``DualEncoder``) or ``generative``
            (conversations: next-token and preference objectives, ``Generator``).
        model_types: The ``model_type`` values of ``config.json`` this family loads.
        checkpoints: Example Hub ids, for messages and the README.
        tiny: Built-in tiny twins: name -> ``"module:builder"`` returning ``(model, processor)``, built once
            into the cache by :func:`tunevl.models.tiny.ensure_tiny` (``tiny-clip`` is shipped, ``tiny-siglip``
            keeps its own manifest-checked cache: see ``tunevl.models.tiny``).
    """

    view: str
    kind: str
    model_types: tuple[str, ...]
    checkpoints: str = ""
    tiny: dict = field(default_factory=dict)


# The one place that knows which families exist. Adding a family: a view file, a tiny file, a recipe and an entry here.
FAMILIES: dict[str, Family] = {
    "clip": Family("tunevl.models.clip:ClipView", DUAL_ENCODER_KIND, ("clip",), "openai/clip-vit-*"),
    "siglip": Family("tunevl.models.siglip:SiglipView", DUAL_ENCODER_KIND, ("siglip",), "google/siglip-*"),
    "llava": Family("tunevl.models.llava:LlavaView", GENERATIVE_KIND, ("llava",), "llava-hf/llava-1.5-*, llava-interleave-qwen-*",
                    tiny={"tiny-llava": "tunevl.models.tiny.llava:build_tiny_llava"}),
    "qwen2_vl": Family("tunevl.models.qwen2_vl:Qwen2VLView", GENERATIVE_KIND, ("qwen2_vl",), "Qwen/Qwen2-VL-*",
                       tiny={"tiny-qwen2-vl": "tunevl.models.tiny.qwen2_vl:build_tiny_qwen2_vl"}),
    "qwen2_5_vl": Family("tunevl.models.qwen2_5_vl:Qwen2_5_VLView", GENERATIVE_KIND, ("qwen2_5_vl",), "Qwen/Qwen2.5-VL-*",
                         tiny={"tiny-qwen2.5-vl": "tunevl.models.tiny.qwen2_5_vl:build_tiny_qwen2_5_vl"}),
    "idefics3": Family("tunevl.models.idefics3:Idefics3View", GENERATIVE_KIND, ("idefics3",),
                       "HuggingFaceTB/SmolVLM-*, HuggingFaceM4/Idefics3-8B-Llama3",
                       tiny={"tiny-idefics3": "tunevl.models.tiny.idefics3:build_tiny_idefics3"}),
    "paligemma": Family("tunevl.models.paligemma:PaliGemmaView", GENERATIVE_KIND, ("paligemma",), "google/paligemma2-*",
                        tiny={"tiny-paligemma": "tunevl.models.tiny.paligemma:build_tiny_paligemma"}),
}

#: Families by kind, for ``Objective.families`` (``families = GENERATIVE``): a new family needs no edit in objectives.
DUAL_ENCODER: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.kind == DUAL_ENCODER_KIND)
GENERATIVE: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.kind == GENERATIVE_KIND)


@dataclass
class ModelConfig:
    """The ``model:`` node of a recipe.

    Args:
        name_or_path: A Hub id (``openai/clip-vit-base-patch16``), a local folder
            saved with ``save_pretrained``, or a built-in tiny model (``tiny-clip``).
        revision: Hub revision (branch, tag or commit) to load.
        family: Model family (``clip``, ``llava``, ...; see :data:`FAMILIES`). Read from the checkpoint's
            ``config.json`` (``model_type``) when omitted, and checked against it when given; naming it lets
            ``tunevl validate`` check objectives and presets offline before the checkpoint is downloaded.
        dtype: ``auto`` (bf16 when training in bf16, else fp32), ``float32`` or ``bfloat16``.
        trust_remote_code: Run code shipped with the checkpoint. Off unless you ask.
        train_logit_scale: Train the contrastive temperature alongside the adapters.
        processor_kwargs: Image-processor settings, e.g. the image-token budget of Qwen2-VL
            (``{max_pixels: 401408}``).
        max_length: Truncate training sequences (generative models) to this many tokens; pre-flight
            checks that no truncation cuts into image tokens. Generation prompts are never truncated.
        quantization: QLoRA (generative families): ``transformers.BitsAndBytesConfig`` arguments, e.g.
            ``{load_in_4bit: true, bnb_4bit_quant_type: nf4, bnb_4bit_compute_dtype: bfloat16,
            bnb_4bit_use_double_quant: true}``. The language model is quantised; the vision tower, projector and
            output head stay in ``dtype`` unless ``llm_int8_skip_modules`` says otherwise. Needs ``bitsandbytes``.
    """

    name_or_path: str
    revision: str | None = None
    family: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    train_logit_scale: bool = False
    processor_kwargs: dict | None = None
    max_length: int | None = None
    quantization: dict | None = None


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


def _supported() -> str:
    return ", ".join(f"{t} ({name})" for name, fam in FAMILIES.items() for t in fam.model_types)


def family_of_config(config: dict, where: str, family: str | None = None) -> str:
    """The family whose ``model_types`` hold ``config["model_type"]``; a one-line error naming the type otherwise.

    Raises:
        UnsupportedModelError: the model type is not supported, or ``family`` is given and does not serve it.
    """
    model_type = config.get("model_type")
    found = next((name for name, fam in FAMILIES.items() if model_type in fam.model_types), None)
    if found is None:
        raise UnsupportedModelError(f"{where}: config.json has model_type {model_type!r}, which tunevl does not support "
                                    f"(supported model types: {_supported()})")
    if family is not None and family != found:
        raise UnsupportedModelError(f"{where}: config.json has model_type {model_type!r}, a {found} model, "
                                    f"not {family} (model.family)")
    return found


def check_family_name(family: str) -> None:
    if family not in FAMILIES:
        raise UnsupportedModelError(f"model family {family!r} is not supported; supported: {', '.join(FAMILIES)}")


def detect_family(name_or_path: str, family: str | None = None, revision: str | None = None) -> str | None:
    """The family of a checkpoint from its ``config.json`` (a local folder, a built-in or the HF cache; never
    downloaded), checked against ``family`` when given; ``family`` alone when the config is not at hand, and
    None when neither says. The repo name is never guessed from.

    Raises:
        UnsupportedModelError: unknown ``family``, an unsupported ``model_type``, or one of another family.
    """
    if family is not None:
        check_family_name(family)
    cfg = _local_config(name_or_path, revision)
    if cfg is None:
        return family
    return family_of_config(cfg, name_or_path, family)


def get_family(name: str):
    """Import and return the view class of a family."""
    check_family_name(name)
    module, cls = FAMILIES[name].view.split(":")
    return getattr(importlib.import_module(module), cls)


def family_kind(name: str) -> str:
    """``dual_encoder`` or ``generative``."""
    check_family_name(name)
    return FAMILIES[name].kind


def load_view(config: ModelConfig, *, torch_dtype=None):
    """Load the checkpoint named by ``config`` and wrap it in its family view.

    The family comes from the checkpoint's ``config.json`` (downloaded if not cached), checked against
    ``model.family`` when the recipe gives one.
    """
    if config.family is not None:
        check_family_name(config.family)
    found = _local_config(config.name_or_path, config.revision) or _remote_config(config)
    fam = family_of_config(found, config.name_or_path, config.family)
    return get_family(fam).from_pretrained(config, torch_dtype=torch_dtype)


def _remote_config(config: ModelConfig) -> dict:
    from transformers.utils import cached_file

    where = f"model.name_or_path: {config.name_or_path!r}"
    try:
        path = cached_file(config.name_or_path, "config.json", revision=config.revision)
    except OSError as err:
        raise UnsupportedModelError(f"{where}: cannot read its config.json ({err.__class__.__name__}: "
                                    f"{str(err).splitlines()[0]})") from err
    if path is None:  # a folder without config.json, or a file the Hub does not have
        raise UnsupportedModelError(f"{where}: no config.json there (a folder saved with save_pretrained, a Hub id or "
                                    "a built-in tiny model)")
    return json.loads(Path(path).read_text())
