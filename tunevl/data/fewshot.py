"""Few-shot and base/new class subsets of a classification source (CoOp's and CoCoOp's protocols).

::

    data:
      train:
        _component_: few_shot
        num_shots: 16                 # k records per class, drawn with `seed`
        seed: 1
        classes: base                 # CoCoOp's base-to-new: train on the first half of the classes
        source: {_component_: coop_split, path: split_zhou_OxfordPets.json, split: train, image_root: images}

Few-shot sampling follows CoOp's ``generate_fewshot_dataset``: per class, ``k`` records drawn without
replacement (all of them when the class has fewer). Class subsets follow CoCoOp's
``subsample_classes``: with ``n`` classes in label order, ``base`` is the first ``ceil(n / 2)``, ``new``
the rest, relabelled from 0. The selection is recorded in the bundle (``tunevl.json``, ``train_data``).
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal

from tunevl.data.preflight import FilteredDataset
from tunevl.errors import DataError


def split_classes(num_classes: int) -> tuple[list[int], list[int]]:
    """``(base, new)`` labels of CoCoOp's base-to-new split: the first ``ceil(n / 2)`` labels and the rest."""
    m = math.ceil(num_classes / 2)
    return list(range(m)), list(range(m, num_classes))


def _label_of(dataset, i: int):
    """Record ``i``'s label without decoding its image where the dataset allows."""
    if hasattr(dataset, "label_of"):
        return dataset.label_of(i)
    if hasattr(dataset, "_record"):  # file-backed sources: the raw record, images left as paths
        return dataset._record(i).get("label")
    return dataset[i].get("label")


class FewShot(FilteredDataset):
    """``num_shots`` records per class of ``source`` (all when None), from all its classes or one half.

    Records keep their fields; ``label`` is renumbered within the kept classes and ``index`` is the
    position in this subset. ``classnames`` are the kept classes' names.

    Args:
        source: The data node to read, e.g. ``{_component_: imagefolder, path: data/train}``; it must
            give records a ``label`` and have ``classnames``.
        num_shots: Records per class; None keeps every record of the kept classes.
        seed: Seed of the draw (CoOp's runs use seeds 1, 2, 3).
        classes: ``all``, ``base`` (the first half of the labels) or ``new`` (the second half).
    """

    def __init__(self, source: dict, num_shots: int | None = None, seed: int = 1,
                 classes: Literal["all", "base", "new"] = "all"):
        if num_shots is not None and num_shots < 1:
            raise DataError(f"must be >= 1, got {num_shots}", arg="num_shots")
        if classes not in ("all", "base", "new"):
            raise DataError(f"must be all, base or new, got {classes!r}", arg="classes")
        self.dataset = _build_source(source)
        self.num_shots, self.seed, self.classes = num_shots, seed, classes
        names = getattr(self.dataset, "classnames", None)
        if not names:
            raise DataError("the source has no classnames; few_shot needs a classification source "
                            "(imagefolder, coop_split, or jsonl/csv with a label column)", arg="source")
        base, new = split_classes(len(names))
        kept = {"all": base + new, "base": base, "new": new}[classes]
        self.label_map = {old: k for k, old in enumerate(kept)}
        self.classnames = [names[c] for c in kept]
        by_class: dict[int, list[int]] = {c: [] for c in kept}
        for i in range(len(self.dataset)):
            label = _label_of(self.dataset, i)
            if label is None:
                raise DataError(f"{_where(self.dataset, i)}: few_shot needs a label on every record")
            if label in by_class:
                by_class[label].append(i)
        rng = random.Random(seed)
        keep: list[int] = []
        for c in kept:  # per class in label order, as CoOp draws them
            items = by_class[c]
            keep += rng.sample(items, num_shots) if num_shots is not None and len(items) >= num_shots else items
        super().__init__(self.dataset, sorted(keep))
        self._position = {i: j for j, i in enumerate(self.keep)}

    def __getitem__(self, j: int) -> dict[str, Any]:
        rec = super().__getitem__(j)
        rec["label"] = self.label_map[rec["label"]]
        return rec

    def label_of(self, j: int) -> int:
        return self.label_map[_label_of(self.dataset, self.keep[j])]

    def first_missing(self, field: str) -> int | None:
        if hasattr(self.dataset, "first_missing") and self.dataset.first_missing(field) is None:
            return None
        for j, i in enumerate(self.keep):
            raw = self.dataset._record(i) if hasattr(self.dataset, "_record") else self.dataset[i]
            if raw.get(field) is None:
                return j
        return None

    def image_files(self):
        """The source's image files of the kept records, numbered as in this subset (for pre-flight)."""
        if not hasattr(self.dataset, "image_files"):
            return
        for i, field, key, path in self.dataset.image_files():
            if i in self._position:
                yield self._position[i], field, key, path

    def describe(self) -> dict:
        """What the bundle records: the draw's settings and the source positions it kept."""
        return {"num_shots": self.num_shots, "seed": self.seed, "classes": self.classes, "num_records": len(self.keep),
                "source_indices": self.keep}

    def __repr__(self) -> str:
        return f"FewShot({self.dataset!r}, num_shots={self.num_shots}, seed={self.seed}, classes={self.classes!r})"


def _where(dataset, i: int) -> str:
    return dataset.location(i) if hasattr(dataset, "location") else f"record {i}"


def _build_source(node: Any):
    from tunevl.config.check import COMPONENT_KEY, resolve_component
    from tunevl.data import DATASETS

    if not isinstance(node, dict) or COMPONENT_KEY not in node:
        raise DataError(f"expected a data node with {COMPONENT_KEY} (e.g. {{_component_: imagefolder, path: ...}})",
                        arg="source")
    args = {k: v for k, v in node.items() if k != COMPONENT_KEY}
    fn = resolve_component(node[COMPONENT_KEY], DATASETS)
    try:
        return fn(**args)
    except DataError as err:
        if err.arg:
            raise DataError(err.detail, arg=f"source.{err.arg}") from None
        raise


def describe_training_data(dataset) -> dict | None:
    """The bundle's record of the training data: its class names and any few-shot selection (None for neither)."""
    info: dict[str, Any] = {}
    node = dataset
    while node is not None:
        if isinstance(node, FewShot):
            info["few_shot"] = node.describe()
            break
        node = node.__dict__.get("dataset") if hasattr(node, "__dict__") else None
    names = getattr(dataset, "classnames", None)
    if names:
        info["classnames"] = list(names)
    return info or None
