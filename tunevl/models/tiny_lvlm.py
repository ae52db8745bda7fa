"""Moved to :mod:`tunevl.models.tiny` (one file per family); these names stay importable from here."""

from tunevl.models.tiny import TINY_LVLMS, cache_dir, ensure_tiny, resolve
from tunevl.models.tiny._lvlm import BUILD_VERSION, build_lvlm_tokenizer
from tunevl.models.tiny.llava import LLAVA_CHAT_TEMPLATE, build_tiny_llava
from tunevl.models.tiny.qwen2_vl import QWEN2_VL_CHAT_TEMPLATE, build_tiny_qwen2_vl

__all__ = [
    "BUILD_VERSION", "LLAVA_CHAT_TEMPLATE", "QWEN2_VL_CHAT_TEMPLATE", "TINY_LVLMS", "build_lvlm_tokenizer",
    "build_tiny_llava", "build_tiny_qwen2_vl", "cache_dir", "ensure_tiny", "resolve",
]
