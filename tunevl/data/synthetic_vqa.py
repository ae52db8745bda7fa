"""Synthetic visual questions about rendered shapes: "How many circles?", "What colour is the square?".

Built on :func:`tunevl.data.synthetic.render_shapes`. Each record is a one-turn conversation with
one image and a one-word answer, plus the answer's candidate set, so answer accuracy can be measured
by ranking candidates (:func:`tunevl.eval.generative.answer_accuracy`). Every record is a pure
function of ``(seed, split, index)``. ``blank_images=True`` keeps the questions and answers but
shows an empty background: a control that can learn answer priors but not look.
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from tunevl.data.synthetic import BACKGROUND, COLOURS, DEFAULT_COLOURS, NUMBER_WORDS, SHAPES, pluralise, render_shapes

QUESTION_TYPES = ("count", "colour")


class SyntheticVQA:
    """Map-style dataset of ``{"messages", "images", "answer", "candidates", "question_type", "index"}`` records.

    Args:
        num_samples: Dataset length.
        split: Name of the random stream (``train``, ``eval``...); splits never share a sample.
        seed: Base seed.
        image_size: Side of the square images in pixels.
        max_count: Counts are drawn from ``1..max_count``.
        colours: Colour names (default red, green, blue, yellow).
        shapes: Shape names (default circle, square).
        questions: ``+``-joined question types: ``count``, ``colour``.
        blank_images: Show an empty background instead of the shapes (the no-vision control).
        text_only: Share of records that are text-only questions without an image
            ("Which number comes after two?"), for mixed batches.
    """

    def __init__(
        self,
        num_samples: int = 2048,
        split: str = "train",
        seed: int = 0,
        image_size: int = 32,
        max_count: int = 3,
        colours: list[str] | None = None,
        shapes: list[str] | None = None,
        questions: str = "count+colour",
        blank_images: bool = False,
        text_only: float = 0.0,
    ):
        self.num_samples, self.split, self.seed = num_samples, split, seed
        self.image_size, self.max_count, self.blank_images = image_size, max_count, blank_images
        self.text_only = text_only
        self.colours = list(colours or DEFAULT_COLOURS)
        self.shapes = list(shapes or ("circle", "square"))
        self.questions = questions.split("+")
        bad = [c for c in self.colours if c not in COLOURS] + [s for s in self.shapes if s not in SHAPES]
        bad += [q for q in self.questions if q not in QUESTION_TYPES]
        if bad or not 1 <= max_count < len(NUMBER_WORDS):
            raise ValueError(f"unknown colours/shapes/question types {bad} or max_count {max_count} out of 1..10")

    def __len__(self) -> int:
        return self.num_samples

    def candidates(self, question_type: str) -> list[str]:
        if question_type == "count":
            return list(NUMBER_WORDS[1 : self.max_count + 1])
        return list(self.colours)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = random.Random(f"tunevl.synthetic_vqa/{self.seed}/{self.split}/{index}")
        count = rng.randint(1, self.max_count)
        colour, shape, qtype = rng.choice(self.colours), rng.choice(self.shapes), rng.choice(self.questions)
        render_seed = rng.getrandbits(63)
        if rng.random() < self.text_only:
            n = rng.randint(1, self.max_count - 1) if self.max_count > 1 else 0
            question, answer = f"Which number comes after {NUMBER_WORDS[n]}?", NUMBER_WORDS[n + 1]
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            return {"messages": messages, "images": [], "answer": answer, "candidates": self.candidates("count"),
                    "question_type": "text", "index": index}
        if qtype == "count":
            question, answer = f"How many {pluralise(shape)}?", NUMBER_WORDS[count]
        else:
            noun = f"is the {shape}" if count == 1 else f"are the {pluralise(shape)}"
            question, answer = f"What colour {noun}?", colour
        if self.blank_images:
            image = Image.new("RGB", (self.image_size, self.image_size), BACKGROUND)
        else:
            image = render_shapes(count, colour, shape, image_size=self.image_size, seed=render_seed)
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
        return {"messages": messages, "images": [image], "answer": answer, "candidates": self.candidates(qtype),
                "question_type": qtype, "count": count, "index": index}


def write_vqa(out_dir, dataset: SyntheticVQA):
    """Write ``dataset`` in the LVLM JSONL layout the ``jsonl`` source reads; returns the JSONL path.

    Layout::

        out_dir/data.jsonl     {"messages": [...], "images": ["images/000000.png"], "answer", "candidates", "question_type"}
        out_dir/images/*.png

    Read it with ``{_component_: jsonl, path: out_dir/data.jsonl, columns: {answer: answer, candidates: candidates}}``
    (the extra columns are what answer accuracy needs on an evaluation set).
    """
    import json
    from pathlib import Path

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    jsonl = out / "data.jsonl"
    with jsonl.open("w", encoding="utf-8") as f:
        for i in range(len(dataset)):
            rec = dataset[i]
            paths = []
            for k, image in enumerate(rec["images"]):
                rel = f"images/{i:06d}{f'_{k}' if k else ''}.png"
                image.save(out / rel, format="PNG")
                paths.append(rel)
            row = {"messages": rec["messages"], "images": paths, "answer": rec["answer"],
                   "candidates": rec["candidates"], "question_type": rec["question_type"]}
            f.write(json.dumps(row) + "\n")
    return jsonl
