"""Synthetic shapes with a short caption and a longer description, for VladVA-style training offline.

Each record is a :class:`~tunevl.data.synthetic.SyntheticShapes` record (``"three red circles"`` in
``text``) plus ``long_text``: a description of three sentences (at least 30 words, so at least 30 tokens
under real tokenizers) that says the same and more, in phrasings drawn per record. ``layout`` decides which fields a
record carries, so the three ways caption data arrives can be reproduced:

- ``both``: ``text`` and ``long_text`` (ShareGPT-4V-like data with a short and a long caption);
- ``either``: one of them, drawn per record (a mix of short-caption and long-caption sets);
- ``one_column``: one of them, always in ``text`` (one caption column of mixed lengths, for ``length_split``).
"""

from __future__ import annotations

import random
from typing import Any, Literal

from tunevl.data.synthetic import NUMBER_WORDS, SyntheticShapes, pluralise

__all__ = ["SyntheticCaptions", "describe"]

LAYOUTS = ("both", "either", "one_column")


def describe(count: int, colour: str, shape: str, rng: random.Random) -> str:
    """A long description of ``count`` ``colour`` ``shape``s, its phrasing drawn from ``rng``."""
    n, many = NUMBER_WORDS[count], count > 1
    noun = pluralise(shape) if many else shape
    be = "are" if many else "is"
    kinds = "shapes" if many else "shape"
    # The colour comes first (lower case, as a word of its own for byte-level tokenizers): the first token of
    # the description is what the summary position of the image learns to predict, so it should depend on the image.
    opening = rng.choice([
        f"{colour} {kinds}: the image shows {n} {colour} {noun} on a dark grey background.",
        f"{colour} on dark grey: this picture contains {n} {colour} {noun} drawn on a plain background.",
        f"{colour} {noun}, {n} in all, stand out against a dark and slightly noisy background.",
    ])
    fill = rng.choice([
        f"{'Each' if many else 'The'} {shape} is filled with solid {colour} and has sharp, clean edges.",
        f"{'They are' if many else 'It is'} painted in one flat {colour} colour, without any outline or shading.",
    ])
    closing = rng.choice([
        f"There {be} exactly {n} of them, and nothing else is drawn in the picture.",
        f"Apart from the {noun}, the picture is empty.",
    ])
    return " ".join([opening, fill, closing])


class SyntheticCaptions:
    """Map-style dataset of ``{"image", "text", "long_text", "count", "label", "index"}`` records (see the module doc).

    Args:
        num_samples: Dataset length.
        split: Name of the random stream (``train``, ``eval``...); splits never share a sample.
        seed: Base seed.
        image_size: Side of the square images in pixels.
        max_count: Counts are drawn from ``1..max_count``.
        colours: Colour names (default red, green, blue, yellow).
        shapes: Shape names (default circle, square, triangle).
        vary: Which attributes vary (``all`` or a ``+``-joined subset of ``count``, ``colour``, ``shape``).
        layout: ``both``, ``either`` or ``one_column`` (see the module doc).
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
        layout: Literal["both", "either", "one_column"] = "both",
    ):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.shapes = SyntheticShapes(num_samples, split, seed, image_size, max_count, colours, shapes, vary)
        self.layout = layout
        self.classnames = self.shapes.classnames

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.shapes[index]
        index = record["index"]
        s = self.shapes
        rng = random.Random(f"tunevl.synthetic_captions/{s.seed}/{s.split}/{index}")
        count, colour, shape, _ = s.attributes(index)
        long_text = describe(count, colour, shape, rng)
        if self.layout == "both":
            return {**record, "long_text": long_text}
        if rng.random() < 0.5:  # this record's caption is the long one
            if self.layout == "either":
                record.pop("text")
                return {**record, "long_text": long_text}
            return {**record, "text": long_text}
        return record

    def config(self) -> dict[str, Any]:
        """Constructor arguments that reproduce this dataset."""
        return {**self.shapes.config(), "layout": self.layout}
