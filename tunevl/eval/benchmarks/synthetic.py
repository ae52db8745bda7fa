"""Synthetic counterparts of CountBench and the attribute-binding benchmarks, rendered offline.

They measure the effect of the counting loss and of hard negatives on tiny models (tests,
``scripts/benchmarks/compositional_effect.py``) and run in any recipe's ``eval.benchmarks``.
"""

from __future__ import annotations

from typing import Any

from tunevl.data.synthetic import SyntheticShapes
from tunevl.data.synthetic_binding import SyntheticBinding
from tunevl.eval.benchmarks.base import Benchmark
from tunevl.eval.compositional import embed_images, embed_texts, pair_accuracy
from tunevl.eval.counting import counting_accuracy


class SyntheticCounting(Benchmark):
    """CountBench's protocol on held-out rendered shapes: the caption's number against every other.

    Items are the records of ``SyntheticShapes(split=split)`` with a count of at least 2 (captions
    like ``"four green triangles"``); the candidates are two..``max_count``.

    Args:
        num_samples: Records drawn (those with count 1 are skipped).
        split: Random stream (disjoint from ``train``).
        seed: Seed of the stream.
        image_size: Image side in pixels.
        max_count: Largest count drawn.
        colours: Colour names (default: the synthetic set's).
        shapes: Shape names (default: the synthetic set's).
        name: Metric prefix.
        max_samples: First N items.

    Metrics: ``accuracy``, ``num_items``, ``confusion``.
    """

    key = "synthetic_counting"

    def __init__(self, num_samples: int = 256, split: str = "eval", seed: int = 0, image_size: int = 64,
                 max_count: int = 6, colours: list[str] | None = None, shapes: list[str] | None = None,
                 name: str | None = None, max_samples: int | None = None):
        super().__init__(name, max_samples)
        self.data = SyntheticShapes(num_samples, split=split, seed=seed, image_size=image_size, max_count=max_count,
                                    colours=colours, shapes=shapes)
        self.numbers = list(range(2, max_count + 1))
        self.indices = self._cap([i for i in range(num_samples) if self.data.attributes(i)[0] >= 2])

    def __len__(self) -> int:
        return len(self.indices)

    def evaluate(self, encoder, batch_size: int | None = None) -> dict[str, Any]:
        records = [self.data[i] for i in self.indices]
        return counting_accuracy(encoder, [r["image"] for r in records], [r["text"] for r in records],
                                 [r["count"] for r in records], self.numbers, batch_size)


class SyntheticBindingBenchmark(Benchmark):
    """Attribute binding on held-out two-object scenes: ``"a red circle and a blue square"`` against
    ``"a blue circle and a red square"`` (SugarCrepe's rule: strictly higher, ties wrong).

    Args:
        num_samples: Items.
        split: Random stream (disjoint from ``train``).
        seed: Seed of the stream.
        image_size: Image side in pixels.
        colours: Colour names (default: all eight).
        shapes: Shape names (default: all five).
        name: Metric prefix.
        max_samples: First N items.

    Metrics: ``accuracy`` (percent; chance is 50), ``num_items``.
    """

    key = "synthetic_binding"

    def __init__(self, num_samples: int = 256, split: str = "eval", seed: int = 0, image_size: int = 64,
                 colours: list[str] | None = None, shapes: list[str] | None = None, name: str | None = None,
                 max_samples: int | None = None):
        super().__init__(name, max_samples)
        self.data = SyntheticBinding(num_samples, split=split, seed=seed, image_size=image_size, colours=colours,
                                     shapes=shapes, negatives=True, negative_images=False)
        self.size = len(self._cap(list(range(num_samples))))

    def __len__(self) -> int:
        return self.size

    def evaluate(self, encoder, batch_size: int | None = None) -> dict[str, Any]:
        records = [self.data[i] for i in range(self.size)]
        image = embed_images(encoder, [r["image"] for r in records], batch_size)
        pos = embed_texts(encoder, [r["text"] for r in records], batch_size)
        neg = embed_texts(encoder, [r["negatives"][0] for r in records], batch_size)
        correct = pair_accuracy((image * pos).sum(-1), (image * neg).sum(-1))
        return {"accuracy": 100.0 * correct.float().mean().item(), "num_items": self.size}
