"""Synthetic attribute binding: two shapes of two colours, and the caption with the colours swapped.

Record ``i`` shows, say, a red circle and a blue square at seeded random positions, captioned
``"a red circle and a blue square"``. Its hard negative caption ``"a blue circle and a red square"``
has the same words, so a model that treats captions as bags of words cannot tell them apart: the
synthetic counterpart of ARO's VG-Attribution and SugarCrepe's ``swap_att``. The hard-negative image
is that swapped scene (same layout, colours exchanged), captioned by the swap: the nearest possible
neighbour, as NegCLIP's ``neg_image`` rows are.

Every record is a pure function of ``(seed, split, index)``, as in :mod:`tunevl.data.synthetic`.
"""

from __future__ import annotations

import random
from typing import Any

from tunevl.data.synthetic import COLOURS, SHAPES, _check_names, render_objects

__all__ = ["SyntheticBinding", "binding_caption"]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def binding_caption(objects: list[tuple[str, str]]) -> str:
    """``[("red", "circle"), ("blue", "square")]`` -> ``"a red circle and a blue square"``."""
    return " and ".join(f"{_article(c)} {c} {s}" for c, s in objects)


class SyntheticBinding:
    """Map-style dataset of two-object scenes for attribute binding.

    Record ``i`` is ``{"image", "text", "negatives", "negative_image", "negative_image_text", "index"}``:
    two objects with different colours and different shapes; ``negatives`` holds the caption with
    the colours swapped (the benchmark's negative), ``negative_image`` the swapped scene with
    ``negative_image_text`` its caption. Set ``negatives: false`` to leave hard captions to the
    objective (NegCLIP's word swaps, made on the fly).

    Args:
        num_samples: dataset length.
        split: name of the random stream (``"train"``, ``"eval"``...).
        seed: base seed.
        image_size: side of the square images in pixels.
        colours: colour names (default: all eight the renderer knows).
        shapes: shape names (default: all five).
        negatives: include the swapped caption as ``negatives``.
        negative_images: include the swapped scene as ``negative_image`` (with its caption).
    """

    def __init__(self, num_samples: int = 2048, split: str = "train", seed: int = 0, image_size: int = 64,
                 colours: list[str] | None = None, shapes: list[str] | None = None, negatives: bool = True,
                 negative_images: bool = True) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        self.colours = _check_names("colours", colours if colours is not None else list(COLOURS), COLOURS)
        self.shapes = _check_names("shapes", shapes if shapes is not None else list(SHAPES), SHAPES)
        if len(self.colours) < 2 or len(self.shapes) < 2:
            raise ValueError("attribute binding needs at least two colours and two shapes")
        self.num_samples, self.split, self.seed, self.image_size = num_samples, split, seed, image_size
        self.negatives, self.negative_images = negatives, negative_images

    def __len__(self) -> int:
        return self.num_samples

    def scene(self, index: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]], int]:
        """``(objects, swapped objects, render seed)`` of record ``index``, without rendering."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = random.Random(f"tunevl.binding/{self.seed}/{self.split}/{index}")
        c1, c2 = rng.sample(self.colours, 2)
        s1, s2 = rng.sample(self.shapes, 2)
        return [(c1, s1), (c2, s2)], [(c2, s1), (c1, s2)], rng.getrandbits(63)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += self.num_samples
        objects, swapped, seed = self.scene(index)
        rec: dict[str, Any] = {"image": render_objects(objects, image_size=self.image_size, seed=seed),
                               "text": binding_caption(objects), "index": index}
        if self.negatives:
            rec["negatives"] = [binding_caption(swapped)]
        if self.negative_images:
            rec["negative_image"] = render_objects(swapped, image_size=self.image_size, seed=seed)
            rec["negative_image_text"] = binding_caption(swapped)
            if self.negatives:
                rec["negative_image_negatives"] = [rec["text"]]
        return rec
