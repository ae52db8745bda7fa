"""Processor classes that transformers lacks for offline, torchvision-free use: image-only variants of
processors that insist on a video processor (which needs torchvision; see PITFALLS.md).

They save as the processor class they derive from (``tunevl.adapters.merge.save_processor``), so a
merged checkpoint loads with plain ``AutoProcessor``.
"""

from __future__ import annotations

from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor without the video processor."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                         chat_template=chat_template, **kwargs)


class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor without the video processor."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                         chat_template=chat_template, **kwargs)
