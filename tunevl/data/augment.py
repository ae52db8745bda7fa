"""Random image augmentation in PIL (no torchvision, which is not usable on every machine; PITFALLS.md).

CoOp and CoCoOp train with ``random_resized_crop`` (area 8-100 %, aspect 3/4-4/3, then resized to the
model's input size) and ``random_flip``. Draws come from torch's random generator, so they follow
``train.seed`` and are restored with the rest of the RNG state on resume.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from PIL import Image

AUGMENTATIONS = ("none", "flip", "crop_flip")
Augment = Literal["none", "flip", "crop_flip"]


def _uniform(low: float, high: float, generator=None) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def random_resized_crop(image: Image.Image, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), generator=None) -> Image.Image:
    """A random box of ``scale`` of the area and ``ratio`` aspect (10 tries, then the largest central box of an
    allowed aspect), resized to ``size x size`` with bicubic interpolation."""
    width, height = image.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(*scale, generator)
        aspect = math.exp(_uniform(*log_ratio, generator))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            break
    else:  # fall back to a central crop
        aspect = width / height
        if aspect < ratio[0]:
            w, h = width, round(width / ratio[0])
        elif aspect > ratio[1]:
            w, h = round(height * ratio[1]), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
    return image.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))


def augment_image(image: Image.Image, kind: Augment, size: int, generator=None) -> Image.Image:
    """``kind`` applied to one RGB image: ``flip`` (horizontal, p = 0.5), ``crop_flip`` (random resized crop
    to ``size``, then flip), ``none``."""
    if kind == "none":
        return image
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {kind!r}")
    if kind == "crop_flip":
        image = random_resized_crop(image, size, generator=generator)
    if torch.rand((), generator=generator).item() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return image
