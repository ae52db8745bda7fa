"""Image loading shared by every family view."""

from __future__ import annotations

import os

from PIL import Image


def load_image(image) -> Image.Image:
    """Return an RGB PIL image from a PIL image or a file path."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as im:
            return im.convert("RGB")
    raise TypeError(f"expected a PIL image or a path, got {type(image).__name__}")
