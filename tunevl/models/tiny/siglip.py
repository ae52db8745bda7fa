"""Tiny SigLIP built offline (``"tiny-siglip"``), for tests and quick experiments.

:func:`build_tiny_siglip` makes a randomly initialised ``transformers.SiglipModel``
(about 0.4 M parameters) with the byte-level BPE of :func:`tunevl.models.tiny.clip.build_tiny_tokenizer`
re-wrapped the SigLIP way, and a PIL image processor; everything is deterministic.
:func:`ensure_tiny_siglip` saves it once into a cache folder, so ``"tiny-siglip"``
loads through the ordinary ``from_pretrained`` calls like any checkpoint.

Text pooling: SigLIP's text tower takes the hidden state of the *last position*
(``[:, -1]``), attends bidirectionally and was trained without an attention mask on
texts padded to ``max_length`` (Zhai et al. 2023, https://arxiv.org/abs/2303.15343).
Like the released tokenizers, the tiny one adds no bos, appends eos and pads with
that same eos token, so the pooled position always holds eos, also after truncation.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipProcessor

from tunevl.models.tiny._store import BuiltinModelError, verify_manifest, write_manifest
from tunevl.models.tiny._store import cache_dir as default_cache_dir
from tunevl.models.tiny.clip import EOS, build_tiny_tokenizer

__all__ = ["TINY_SIGLIP_SPEC", "build_tiny_siglip", "build_tiny_siglip_tokenizer", "ensure_tiny_siglip", "save_tiny_siglip"]

#: Architecture of the tiny SigLIP (both towers share width and depth).
TINY_SIGLIP_SPEC: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "image_size": 64,
    "patch_size": 8,
    "max_position_embeddings": 32,
}
# SigLIP's initial temperature and bias: t' = log 10, b = -10 (paper, section 3.2).
INIT_LOGIT_SCALE, INIT_LOGIT_BIAS = math.log(10.0), -10.0
# Bumped whenever the built model changes, so stale caches are rebuilt.
BUILD_VERSION = 1


def build_tiny_siglip_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny BPE (:func:`~tunevl.models.tiny.clip.build_tiny_tokenizer`), SigLIP style.

    No bos; eos appended; eos is also the pad token; right padding; truncation keeps
    the eos; no attention mask in its outputs (SigLIP uses none).
    """
    from tokenizers import processors

    backend = build_tiny_tokenizer().backend_tokenizer
    eos_id = backend.token_to_id(EOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS,
        pad_token=EOS,
        padding_side="right",
        truncation_side="right",
        model_max_length=TINY_SIGLIP_SPEC["max_position_embeddings"],
    )
    tok.model_input_names = ["input_ids"]
    tok.init_kwargs["model_input_names"] = ["input_ids"]  # kept by save_pretrained
    return tok


def build_tiny_siglip(seed: int = 0) -> tuple[SiglipModel, SiglipProcessor]:
    """Build a randomly initialised tiny SigLIP and its processor, deterministically.

    The global torch RNG state is left untouched. The logit scale and bias start at
    SigLIP's ``log 10`` and ``-10``.

    Args:
        seed: seed of the weight initialisation.

    Returns:
        ``(model, processor)``: a float32 ``SiglipModel`` in eval mode and a
        ``SiglipProcessor`` (``SiglipImageProcessorPil`` + fast BPE tokenizer).
    """
    s = TINY_SIGLIP_SPEC
    tokenizer = build_tiny_siglip_tokenizer()
    tower = {k: s[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")}
    config = SiglipConfig(
        text_config=dict(
            tower,
            vocab_size=len(tokenizer),
            max_position_embeddings=s["max_position_embeddings"],
            projection_size=s["hidden_size"],
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(tower, image_size=s["image_size"], patch_size=s["patch_size"]),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipModel(config).float().eval()
    with torch.no_grad():
        model.logit_scale.fill_(INIT_LOGIT_SCALE)
        model.logit_bias.fill_(INIT_LOGIT_BIAS)
    image_processor = SiglipImageProcessorPil(size={"height": s["image_size"], "width": s["image_size"]})
    return model, SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def save_tiny_siglip(path: str | Path, model: SiglipModel, processor: SiglipProcessor) -> Path:
    """Save model (safetensors) and processor to ``path``; returns the folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    return path


def _cache_root(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def _is_current(folder: Path) -> bool:
    try:
        verify_manifest(folder)
        info = json.loads((folder / "MANIFEST.json").read_text(encoding="utf-8"))
    except (BuiltinModelError, OSError, ValueError):
        return False
    return info.get("build_version") == BUILD_VERSION and info.get("architecture") == TINY_SIGLIP_SPEC


def ensure_tiny_siglip(cache_dir: str | Path | None = None) -> str:
    """Return the folder of the tiny SigLIP, building and saving it first if needed.

    The folder is ``<root>/tiny-siglip`` with ``root`` = ``cache_dir``, else
    ``$TUNEVL_CACHE``, else ``~/.cache/tunevl``. A folder whose files fail their
    SHA-256 manifest, or that an older build wrote, is rebuilt. Safe when several
    processes (ranks) call it at once: each builds in a private temporary folder and
    the first rename wins.
    """
    folder = _cache_root(cache_dir) / "tiny-siglip"
    if _is_current(folder):
        return str(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-siglip-", dir=folder.parent))
    try:
        save_tiny_siglip(tmp, *build_tiny_siglip(seed=0))
        write_manifest(
            tmp,
            name="tiny-siglip",
            description="Tiny random SigLIP for offline tests; not a useful model.",
            made_by="tunevl.models.tiny.siglip.ensure_tiny_siglip",
            build_version=BUILD_VERSION,
            architecture=TINY_SIGLIP_SPEC,
        )
        if folder.exists() and not _is_current(folder):
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first
            if not _is_current(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)
