"""Synthetic "shapes" image–caption data, rendered on the fly with PIL.

Each image shows ``count`` shapes of one colour and one kind on a dark, lightly
noised background; its caption names them, e.g. ``"three red circles"`` or
``"one blue square"``. Every record is a pure function of ``(seed, split, index)``,
so the data needs no download, is identical on every machine and rank, and
different splits never share a sample.

This is the data of the offline quickstart and of many tests; ``write_synthetic``
exports it in tunevl's JSONL + images layout (``tunevl data synth``).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BACKGROUND",
    "COLOURS",
    "DEFAULT_COLOURS",
    "DEFAULT_SHAPES",
    "NUMBER_WORDS",
    "SHAPES",
    "SyntheticShapes",
    "caption_for",
    "pluralise",
    "render_objects",
    "render_shapes",
    "write_synthetic",
]

#: RGB of every colour name the renderer knows.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "white": (240, 240, 240),
    "orange": (245, 140, 30),
    "cyan": (40, 210, 220),
}
#: Shape names the renderer knows.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star")
DEFAULT_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
DEFAULT_SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
#: ``NUMBER_WORDS[n]`` spells ``n``; index 0 is unused.
NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
)
#: Background RGB; pixel noise of ``noise`` levels is added to it.
BACKGROUND: tuple[int, int, int] = (28, 28, 32)
_ATTRIBUTES = ("count", "colour", "shape")


def pluralise(noun: str) -> str:
    """English plural of a shape noun (``"circle"`` → ``"circles"``, ``"cross"`` → ``"crosses"``)."""
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def caption_for(count: int, colour: str, shape: str) -> str:
    """The canonical caption, e.g. ``caption_for(3, "red", "circle") == "three red circles"``."""
    if not 1 <= count < len(NUMBER_WORDS):
        raise ValueError(f"count must be in 1..{len(NUMBER_WORDS) - 1}, got {count}")
    noun = shape if count == 1 else pluralise(shape)
    return f"{NUMBER_WORDS[count]} {colour} {noun}"


def _check_names(kind: str, names: list[str] | tuple[str, ...], known) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown or empty {kind} {unknown or names}; choose from {sorted(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate {kind} in {names}")
    return names


def _shape_points(shape: str, x0: int, y0: int, s: int) -> list[tuple[float, float]]:
    """Polygon vertices of ``shape`` inscribed in the box ``[x0, x0+s-1] × [y0, y0+s-1]``."""
    x1, y1 = x0 + s - 1, y0 + s - 1
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "star":
        r_out, r_in = (s - 1) / 2, (s - 1) / 4.5
        pts = []
        for k in range(10):
            r = r_out if k % 2 == 0 else r_in
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        return pts
    raise ValueError(f"no polygon for shape {shape!r}")


def _place_boxes(rng: random.Random, count: int, image_size: int) -> list[tuple[int, int, int]]:
    """Non-overlapping square boxes ``(x0, y0, side)``, at least 2 px apart, inside a 1 px border."""
    base = max(4, round(image_size * 0.18))
    for scale in (1.0, 0.85, 0.7, 0.55, 0.4):
        boxes: list[tuple[int, int, int]] = []
        for _ in range(count):
            for _attempt in range(200):
                side = max(3, round(base * scale * rng.uniform(0.85, 1.15)))
                hi = image_size - side - 1
                if hi < 1:
                    break
                x0, y0 = rng.randint(1, hi), rng.randint(1, hi)
                # Gap >= 2 px keeps shapes separate even under 8-connectivity.
                if all(x0 >= bx + bs + 2 or bx >= x0 + side + 2 or y0 >= by + bs + 2 or by >= y0 + side + 2
                       for bx, by, bs in boxes):
                    boxes.append((x0, y0, side))
                    break
            else:
                break
        if len(boxes) == count:
            return boxes
    raise ValueError(f"cannot place {count} shapes on a {image_size}px image")


def render_shapes(
    count: int,
    colour: str,
    shape: str,
    *,
    image_size: int = 64,
    seed: int,
    noise: int = 6,
) -> Image.Image:
    """Draw ``count`` non-overlapping shapes of one colour at seeded random positions.

    Args:
        count: number of shapes (>= 1).
        colour: a key of :data:`COLOURS`.
        shape: one of :data:`SHAPES`.
        image_size: side of the square RGB image in pixels.
        seed: the image is a pure function of all arguments.
        noise: amplitude of the uniform background noise (0 for a plain background).
            Shapes are drawn solid, without anti-aliasing, in the exact colour.

    Returns:
        An RGB ``PIL.Image.Image``.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return render_objects([(colour, shape)] * count, image_size=image_size, seed=seed, noise=noise)


def render_objects(
    objects: list[tuple[str, str]],
    *,
    image_size: int = 64,
    seed: int,
    noise: int = 6,
) -> Image.Image:
    """Draw one shape per ``(colour, shape)`` of ``objects``, non-overlapping, at seeded random positions.

    The positions depend on ``seed`` and the number of objects only, so the same seed with the
    colours exchanged draws the same layout (what the attribute-binding set relies on).
    ``render_shapes(n, c, s, seed=k)`` is ``render_objects([(c, s)] * n, seed=k)``.
    """
    for colour, shape in objects:
        if colour not in COLOURS:
            raise ValueError(f"unknown colour {colour!r}; choose from {sorted(COLOURS)}")
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; choose from {list(SHAPES)}")
    if not objects:
        raise ValueError("draw at least one object")
    rng = random.Random(seed)
    bg = np.empty((image_size, image_size, 3), dtype=np.int16)
    bg[:] = BACKGROUND
    if noise > 0:
        nrng = np.random.default_rng(seed)
        bg += nrng.integers(-noise, noise + 1, size=bg.shape, dtype=np.int16)
    image = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for (colour, shape), (x0, y0, s) in zip(objects, _place_boxes(rng, len(objects), image_size)):
        fill = COLOURS[colour]
        box = [x0, y0, x0 + s - 1, y0 + s - 1]
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle([x0 + 1, y0 + 1, x0 + s - 2, y0 + s - 2], fill=fill)
        else:
            draw.polygon(_shape_points(shape, x0, y0, s), fill=fill)
    return image


class SyntheticShapes:
    """Map-style dataset of rendered shapes with count/colour/shape captions.

    Record ``i`` is ``{"image", "text", "count", "index", "label"}``, a pure function
    of ``(seed, split, i)``: each split string draws from its own random stream, so
    ``"train"`` and ``"eval"`` never share a sample. Count, colour and shape are drawn
    uniformly and independently.

    ``label`` indexes :attr:`classnames`, the list of every caption the configuration
    can produce (counts × colours × shapes, in that nesting order), so zero-shot
    classification over ``classnames`` is retrieval over the caption pool.

    Args:
        num_samples: dataset length.
        split: name of the random stream, e.g. ``"train"`` or ``"eval"``.
        seed: base seed.
        image_size: side of the square images in pixels.
        max_count: counts are drawn from ``1..max_count`` (at most 10).
        colours: colour names (default red, green, blue, yellow).
        shapes: shape names (default circle, square, triangle).
        vary: which attributes vary: ``"all"`` or a ``+``-joined subset of
            ``count``, ``colour``, ``shape`` (e.g. ``"count"``). Fixed attributes
            take count 1, the first colour and the first shape.
    """

    def __init__(
        self,
        num_samples: int = 2048,
        split: str = "train",
        seed: int = 0,
        image_size: int = 64,
        max_count: int = 6,
        colours: list[str] | None = None,
        shapes: list[str] | None = None,
        vary: str = "all",
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if not 1 <= max_count < len(NUMBER_WORDS):
            raise ValueError(f"max_count must be in 1..{len(NUMBER_WORDS) - 1}, got {max_count}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        self.num_samples = num_samples
        self.split = split
        self.seed = seed
        self.image_size = image_size
        self.max_count = max_count
        self.colours = _check_names("colours", colours if colours is not None else DEFAULT_COLOURS, COLOURS)
        self.shapes = _check_names("shapes", shapes if shapes is not None else DEFAULT_SHAPES, SHAPES)
        varied = set(_ATTRIBUTES) if vary == "all" else set(vary.split("+"))
        if not varied <= set(_ATTRIBUTES) or not varied:
            raise ValueError(f"vary must be 'all' or a '+'-joined subset of {_ATTRIBUTES}, got {vary!r}")
        self.vary = vary
        self._choices = {
            "count": list(range(1, max_count + 1)) if "count" in varied else [1],
            "colour": self.colours if "colour" in varied else self.colours[:1],
            "shape": self.shapes if "shape" in varied else self.shapes[:1],
        }
        self.classnames: list[str] = [
            caption_for(n, c, s)
            for n in self._choices["count"]
            for c in self._choices["colour"]
            for s in self._choices["shape"]
        ]
        self._label = {name: i for i, name in enumerate(self.classnames)}

    def __len__(self) -> int:
        return self.num_samples

    def attributes(self, index: int) -> tuple[int, str, str, int]:
        """``(count, colour, shape, render_seed)`` of record ``index``, without rendering."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        # A str seed is hashed with SHA-512 by `random`, so it is stable across runs and platforms.
        rng = random.Random(f"tunevl.synthetic/{self.seed}/{self.split}/{index}")
        count = rng.choice(self._choices["count"])
        colour = rng.choice(self._choices["colour"])
        shape = rng.choice(self._choices["shape"])
        return count, colour, shape, rng.getrandbits(63)

    def label_of(self, index: int) -> int:
        """``label`` of record ``index``, without rendering."""
        return self._label[self.caption(index)]

    def caption(self, index: int) -> str:
        """Caption of record ``index``, without rendering."""
        count, colour, shape, _ = self.attributes(index)
        return caption_for(count, colour, shape)

    def all_captions(self) -> list[str]:
        """Captions of every record in order (cheap: no rendering)."""
        return [self.caption(i) for i in range(self.num_samples)]

    def caption_pool(self) -> list[str]:
        """Every distinct caption this configuration can produce (same as :attr:`classnames`)."""
        return list(self.classnames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += self.num_samples
        count, colour, shape, render_seed = self.attributes(index)
        text = caption_for(count, colour, shape)
        image = render_shapes(count, colour, shape, image_size=self.image_size, seed=render_seed)
        return {"image": image, "text": text, "count": count, "index": index, "label": self._label[text]}

    def config(self) -> dict[str, Any]:
        """Constructor arguments that reproduce this dataset."""
        return {
            "num_samples": self.num_samples, "split": self.split, "seed": self.seed,
            "image_size": self.image_size, "max_count": self.max_count, "colours": self.colours,
            "shapes": self.shapes, "vary": self.vary,
        }


def write_synthetic(out_dir: str | Path, dataset: SyntheticShapes, *, image_format: str = "png") -> Path:
    """Write ``dataset`` in tunevl's JSONL + images layout.

    Layout::

        out_dir/data.jsonl        one {"image": "images/000000.png", "text", "count", "label"} per line
        out_dir/images/*.png      named by record index
        out_dir/meta.json         {"generator": "tunevl.data.synthetic", "config": {...}, "classnames": [...]}

    Image paths are relative to ``out_dir``.

    Args:
        out_dir: destination folder (created; existing files of the same names are overwritten).
        dataset: the records to write.
        image_format: ``"png"`` (lossless, default) or any PIL format name such as ``"jpeg"``.

    Returns:
        Path of ``data.jsonl``.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    ext = {"jpeg": "jpg"}.get(image_format.lower(), image_format.lower())
    jsonl = out / "data.jsonl"
    with jsonl.open("w", encoding="utf-8") as f:
        for i in range(len(dataset)):
            rec = dataset[i]
            rel = f"images/{i:06d}.{ext}"
            rec["image"].save(out / rel, format=image_format.upper() if ext != "jpg" else "JPEG")
            row = {"image": rel, "text": rec["text"], "count": rec["count"], "label": rec["label"]}
            f.write(json.dumps(row) + "\n")
    meta = {"generator": "tunevl.data.synthetic", "config": dataset.config(), "classnames": dataset.classnames}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return jsonl
