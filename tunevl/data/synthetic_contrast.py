"""Synthetic minimal-visual-contrast pairs: two rendered images that differ in one count, colour or
position, each with the caption that matches it (the shape of S-VCO's MVC data, FORMATS.md §7).

- ``count``: the same shapes and colour, two different counts (e.g. "two red circles" / "three red circles");
- ``colour``: the same layout pixel for pixel, two colours;
- ``position``: one shape on the left, and the same image mirrored ("... on the left" / "... on the right"),
  as CounterCurate makes its left-right negatives.

Which image of the two is "chosen" is a coin flip per record, so neither side of a contrast is
favoured. Records are canonical preference records (:mod:`tunevl.data.preference`), a pure function
of ``(seed, split, index)``; :func:`write_mvc` exports them in MVC's own JSON layout
(``tunevl data synth --kind contrast``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from tunevl.data.preference import normalise_preference
from tunevl.data.synthetic import BACKGROUND, COLOURS, DEFAULT_COLOURS, NUMBER_WORDS, SHAPES, caption_for, render_shapes

CONTRAST_KINDS = ("count", "colour", "position")


class SyntheticContrast:
    """Map-style dataset of minimal-contrast preference pairs.

    Args:
        num_samples: Dataset length.
        split: Name of the random stream (``train``, ``eval``...); splits never share a sample.
        seed: Base seed.
        image_size: Side of the square images in pixels.
        kinds: ``+``-joined contrast kinds among ``count``, ``colour``, ``position``.
        max_count: Counts are drawn from ``1..max_count`` (count contrasts need at least 2).
        colours: Colour names (default red, green, blue, yellow).
        shapes: Shape names (default circle, square).
        instruction: The user's instruction, written before the image as in MVC.
    """

    def __init__(
        self,
        num_samples: int = 2048,
        split: str = "train",
        seed: int = 0,
        image_size: int = 32,
        kinds: str = "count+colour+position",
        max_count: int = 3,
        colours: list[str] | None = None,
        shapes: list[str] | None = None,
        instruction: str = "Describe the image.",
    ):
        self.num_samples, self.split, self.seed, self.image_size = num_samples, split, seed, image_size
        self.kinds = kinds.split("+")
        self.max_count, self.instruction = max_count, instruction
        self.colours = list(colours or DEFAULT_COLOURS)
        self.shapes = list(shapes or ("circle", "square"))
        bad = [k for k in self.kinds if k not in CONTRAST_KINDS] + [c for c in self.colours if c not in COLOURS]
        bad += [s for s in self.shapes if s not in SHAPES]
        if bad or not 1 <= max_count < len(NUMBER_WORDS) or len(self.colours) < 2:
            raise ValueError(f"unknown kinds/colours/shapes {bad}, max_count {max_count} out of 1..10, "
                             "or fewer than two colours")
        if "count" in self.kinds and max_count < 2:
            raise ValueError("count contrasts need max_count >= 2")

    def __len__(self) -> int:
        return self.num_samples

    def pair(self, index: int) -> dict[str, Any]:
        """``{"kind", "images": (chosen, rejected), "responses": (chosen, rejected)}`` of record ``index``."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = random.Random(f"tunevl.synthetic_contrast/{self.seed}/{self.split}/{index}")
        kind, shape = rng.choice(self.kinds), rng.choice(self.shapes)
        colour, other = rng.sample(self.colours, 2)
        size, seed = self.image_size, rng.getrandbits(63)
        if kind == "count":
            a, b = rng.sample(range(1, self.max_count + 1), 2)
            images = [render_shapes(n, colour, shape, image_size=size, seed=seed + k) for k, n in enumerate((a, b))]
            texts = [caption_for(a, colour, shape), caption_for(b, colour, shape)]
        elif kind == "colour":
            n = rng.randint(1, self.max_count)
            images = [render_shapes(n, c, shape, image_size=size, seed=seed) for c in (colour, other)]  # same layout
            texts = [caption_for(n, colour, shape), caption_for(n, other, shape)]
        else:
            left = _one_shape_on_the_left(colour, shape, size, seed)
            images = [left, ImageOps.mirror(left)]
            texts = [f"{caption_for(1, colour, shape)} on the {side}" for side in ("left", "right")]
        if rng.random() < 0.5:
            images, texts = images[::-1], texts[::-1]
        return {"kind": kind, "images": tuple(images), "responses": tuple(texts)}

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += self.num_samples
        p = self.pair(index)
        raw = {"images": [p["images"][0]], "contrast_images": [p["images"][1]], "prompt": self.instruction,
               "chosen": p["responses"][0], "rejected": p["responses"][1]}
        record = normalise_preference(raw, f"synthetic_contrast record {index}", text_first=True)
        record.update(contrast_kind=p["kind"], index=index)
        return record

    def config(self) -> dict[str, Any]:
        """Constructor arguments that reproduce this dataset."""
        return {"num_samples": self.num_samples, "split": self.split, "seed": self.seed, "image_size": self.image_size,
                "kinds": "+".join(self.kinds), "max_count": self.max_count, "colours": self.colours,
                "shapes": self.shapes, "instruction": self.instruction}


def _one_shape_on_the_left(colour: str, shape: str, size: int, seed: int) -> Image.Image:
    """One shape whose centre is clearly left of the middle (seeds tried in order until one is)."""
    for k in range(100):
        image = render_shapes(1, colour, shape, image_size=size, seed=seed + k)
        pixels = np.asarray(image, dtype=np.int16)
        columns = np.nonzero((np.abs(pixels - np.array(BACKGROUND)) > 40).any(-1).any(0))[0]
        centre = (columns.min() + columns.max()) / 2
        if abs(centre - (size - 1) / 2) >= size / 8:
            return image if centre < size / 2 else ImageOps.mirror(image)
    raise ValueError(f"cannot place a {shape} off-centre on a {size}px image")


def write_mvc(out_dir: str | Path, dataset: SyntheticContrast, *, file_name: str = "mvc.json") -> Path:
    """Write ``dataset`` in S-VCO's MVC layout: a JSON array of pairs and their images.

    Layout::

        out_dir/mvc.json           [{"chosen_images": ["images/000000_chosen.png"], "rejected_images": [...],
                                     "system_prompt": "", "instruction_prompt": ..., "chosen_response": ...,
                                     "rejected_response": ...}, ...]   (paths relative to out_dir)
        out_dir/images/*.png
        out_dir/meta.json          {"generator", "kind": "contrast", "config", "contrast_kinds": [per record]}

    Read it back with ``{_component_: preference, path: out_dir/mvc.json}``.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, kinds = [], []
    for i in range(len(dataset)):
        p = dataset.pair(i)
        paths = []
        for side, image in zip(("chosen", "rejected"), p["images"]):
            rel = f"images/{i:06d}_{side}.png"
            image.save(out / rel, format="PNG")
            paths.append(rel)
        rows.append({"chosen_images": [paths[0]], "rejected_images": [paths[1]], "system_prompt": "",
                     "instruction_prompt": dataset.instruction, "chosen_response": p["responses"][0],
                     "rejected_response": p["responses"][1]})
        kinds.append(p["kind"])
    path = out / file_name
    path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    meta = {"generator": "tunevl.data.synthetic_contrast", "kind": "contrast", "config": dataset.config(), "contrast_kinds": kinds}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path
