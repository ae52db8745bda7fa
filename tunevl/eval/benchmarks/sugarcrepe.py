"""SugarCrepe (Hsieh et al., NeurIPS 2023, https://arxiv.org/abs/2306.14610): ``RAIVNLab/sugar-crepe``'s ``data/*.json``.

Each category file is a JSON object ``{"0": {"filename", "caption", "negative_caption"}, ...}`` over
COCO-2017 val images (FORMATS.md section 2). Metric (``main_eval.py``): per category, the share of
items whose image scores the caption strictly higher than the negative caption.
"""

from __future__ import annotations

import os
from typing import Any

from tunevl.errors import DataError
from tunevl.eval.benchmarks.base import Benchmark, absolute, check_images, existing_folder, need, read_json
from tunevl.eval.compositional import embed_images, embed_texts, pair_accuracy

#: The seven categories of the released data.
CATEGORIES = ("add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")


class SugarCrepe(Benchmark):
    """SugarCrepe's seven categories (or those given), read from the repository's ``data/`` folder.

    Args:
        path: The ``data/`` folder holding ``<category>.json`` files, or one such file.
        image_root: COCO ``val2017`` image folder (``filename`` is joined to it).
        categories: Which categories to read from a folder (default: every one present).
        name: Metric prefix (default ``sugarcrepe``).
        max_samples: First N items of each category.

    Metrics: ``<category>`` accuracy (percent) per category, ``average`` over the categories,
    ``num_items``.
    """

    key = "sugarcrepe"

    def __init__(self, path: str, image_root: str, categories: list[str] | None = None, name: str | None = None,
                 max_samples: int | None = None):
        super().__init__(name, max_samples)
        full = absolute(path)
        root = existing_folder(image_root)
        if os.path.isdir(full):
            wanted = list(categories) if categories is not None else [c for c in CATEGORIES
                                                                     if os.path.isfile(os.path.join(full, f"{c}.json"))]
            files = {c: os.path.join(full, f"{c}.json") for c in wanted}
            missing = [f for f in files.values() if not os.path.isfile(f)]
            if missing or not files:
                raise DataError(f"no SugarCrepe file {missing[0] if missing else f'<category>.json in {full}'} "
                                f"(categories: {', '.join(CATEGORIES)})", arg="path")
        elif os.path.isfile(full):
            files = {os.path.splitext(os.path.basename(full))[0]: full}
        else:
            raise DataError(f"no such file or folder: {full}", arg="path")
        self.items: dict[str, list[dict[str, Any]]] = {}
        for category, file in files.items():
            data = read_json(file)
            if not isinstance(data, dict):
                raise DataError(f"{file}: expected a JSON object of items keyed by index, got {type(data).__name__}")
            items = []
            for key, item in data.items():  # .items(): swap_obj has a hole in its keys
                need(item, ("filename", "caption", "negative_caption"), f"{file}: item {key!r}")
                items.append({"image": os.path.join(root, item["filename"]), "caption": item["caption"],
                              "negative": item["negative_caption"], "where": f"{file}: item {key!r}"})
            items = self._cap(items)
            check_images([i["image"] for i in items], [i["where"] for i in items], file)
            self.items[category] = items

    def __len__(self) -> int:
        return sum(len(v) for v in self.items.values())

    def evaluate(self, encoder, batch_size: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for category, items in self.items.items():
            image = embed_images(encoder, [i["image"] for i in items], batch_size)
            pos = embed_texts(encoder, [i["caption"] for i in items], batch_size)
            neg = embed_texts(encoder, [i["negative"] for i in items], batch_size)
            correct = pair_accuracy((image * pos).sum(-1), (image * neg).sum(-1))
            out[category] = 100.0 * correct.float().mean().item()
        out["average"] = sum(out.values()) / len(out)
        out["num_items"] = len(self)
        return out
