"""Winoground (Thrush et al., CVPR 2022, https://arxiv.org/abs/2204.03162): ``facebook/winoground``'s
``data/examples.jsonl`` with the images of ``data/images.zip`` (``images/<stem>.png``), FORMATS.md section 4."""

from __future__ import annotations

import json
import os
from typing import Any

from tunevl.errors import DataError
from tunevl.eval.benchmarks.base import Benchmark, absolute, check_images, existing_folder, need
from tunevl.eval.compositional import embed_images, embed_texts, winoground_scores


class Winoground(Benchmark):
    """Winoground's 400 examples: two images, two captions with the same words in another order.

    Args:
        path: ``examples.jsonl``, or the folder holding it.
        image_root: The folder of the extracted ``images.zip`` (holding ``images/``); default: the
            JSONL's folder. Images are ``<image_root>/images/<stem>.png`` (or ``<image_root>/<stem>.png``).
        name: Metric prefix.
        max_samples: First N examples.

    Metrics (the official statistics script; percent): ``text`` (each image prefers its caption:
    ``c0_i0 > c1_i0 and c1_i1 > c0_i1``), ``image`` (each caption prefers its image:
    ``c0_i0 > c0_i1 and c1_i1 > c1_i0``), ``group`` (both), and the same per ``collapsed_tag``
    (``group/Object``...); ``num_items``. Chance is 25 / 25 / 16.67.
    """

    key = "winoground"

    def __init__(self, path: str, image_root: str | None = None, name: str | None = None, max_samples: int | None = None):
        super().__init__(name, max_samples)
        full = absolute(path)
        if os.path.isdir(full):
            full = os.path.join(full, "examples.jsonl")
        if not os.path.isfile(full):
            raise DataError(f"no such file: {full}", arg="path")
        self.file = full
        root = existing_folder(image_root) if image_root is not None else os.path.dirname(full)
        folder = os.path.join(root, "images") if os.path.isdir(os.path.join(root, "images")) else root
        self.items = []
        with open(full, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{full}:{line_no}"
                try:
                    ex = json.loads(line)
                except ValueError as err:
                    raise DataError(f"{where}: invalid JSON: {err}") from None
                need(ex, ("image_0", "image_1", "caption_0", "caption_1"), where)
                self.items.append({"images": [os.path.join(folder, f"{ex[k]}.png") for k in ("image_0", "image_1")],
                                   "captions": [ex["caption_0"], ex["caption_1"]],
                                   "tag": ex.get("collapsed_tag"), "where": where})
        self.items = self._cap(self.items)
        check_images([p for i in self.items for p in i["images"]], [i["where"] for i in self.items for _ in (0, 1)], full)

    def __len__(self) -> int:
        return len(self.items)

    def evaluate(self, encoder, batch_size: int | None = None) -> dict[str, Any]:
        n = len(self.items)
        image = embed_images(encoder, [p for i in self.items for p in i["images"]], batch_size).reshape(n, 2, -1)
        text = embed_texts(encoder, [c for i in self.items for c in i["captions"]], batch_size).reshape(n, 2, -1)
        s = {(c, k): (text[:, c] * image[:, k]).sum(-1) for c in (0, 1) for k in (0, 1)}
        scores = winoground_scores(s[0, 0], s[0, 1], s[1, 0], s[1, 1])
        out: dict[str, Any] = {name: 100.0 * v.float().mean().item() for name, v in scores.items()}
        for tag in sorted({i["tag"] for i in self.items if i["tag"]}):
            rows = [k for k, i in enumerate(self.items) if i["tag"] == tag]
            for name, v in scores.items():
                out[f"{name}/{tag}"] = 100.0 * v[rows].float().mean().item()
        out["num_items"] = n
        return out
