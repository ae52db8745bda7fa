"""CountBench (Paiss et al., ICCV 2023): ``CountBench.json`` from ``teaching-clip-to-count.github.io``, with
cached images (its URLs rot), or the HF mirror's parquet with embedded images (FORMATS.md section 1)."""

from __future__ import annotations

import os
from typing import Any

from tunevl.errors import DataError
from tunevl.eval.benchmarks.base import Benchmark, absolute, existing_folder, need, read_json
from tunevl.eval.counting import COUNT_NUMBERS, counting_accuracy

_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


class CountBench(Benchmark):
    """CountBench's 540 items ``{image_url, text, number}``: pick the caption with the right number among 9.

    Images, since the URLs are mostly dead:

    * ``CountBench.json`` with ``image_root``: item ``i`` (0-based, file order) is ``<image_root>/<i>.<ext>``
      (jpg, jpeg, png, webp, gif, bmp), or the item's own ``image`` key (a path relative to
      ``image_root``) when you added one;
    * the HF mirror ``nielsr/countbench`` saved as parquet (``image`` holds the bytes).

    Items without an image are left out and counted in ``num_missing`` (the mirror has 491 of 540).

    Args:
        path: ``CountBench.json`` or a parquet file.
        image_root: Folder of the cached images (JSON only); default: ``images/`` beside the JSON.
        name: Metric prefix.
        max_samples: First N items with an image.

    Metrics: ``accuracy`` (percent), ``num_items``, ``num_missing``, ``confusion`` (9 x 9 counts,
    rows the true number two..ten, columns the predicted; ``tunevl eval --out`` and training runs
    also draw it as ``countbench_confusion.png``).
    """

    key = "countbench"

    def __init__(self, path: str, image_root: str | None = None, name: str | None = None, max_samples: int | None = None):
        super().__init__(name, max_samples)
        self.file = absolute(path)
        if not os.path.isfile(self.file):
            raise DataError(f"no such file: {self.file}", arg="path")
        items = self._parquet() if self.file.endswith(".parquet") else self._json(image_root)
        self.num_missing = sum(1 for i in items if i["image"] is None)
        self.items = self._cap([i for i in items if i["image"] is not None])
        if not self.items:
            raise DataError(f"{self.file}: none of the {len(items)} items has an image; cache them as "
                            f"<image_root>/<index>.jpg (image_root: {self._root})")

    def _json(self, image_root):
        data = read_json(self.file)
        if not isinstance(data, list):
            raise DataError(f"{self.file}: expected a JSON array of {{image_url, text, number}} objects")
        self._root = existing_folder(image_root) if image_root is not None else os.path.join(os.path.dirname(self.file), "images")
        items = []
        for i, item in enumerate(data):
            need(item, ("text", "number"), f"{self.file}: item {i}")
            if item.get("image"):
                path = os.path.join(self._root, item["image"])
                found = path if os.path.isfile(path) else None
            else:
                found = next((p for p in (os.path.join(self._root, f"{i}{e}") for e in _EXTENSIONS) if os.path.isfile(p)), None)
            items.append({"image": found, "text": item["text"], "number": self._number(item["number"], i)})
        return items

    def _parquet(self):
        import pyarrow.parquet as pq

        self._root = self.file
        table = pq.read_table(self.file, columns=None)
        for column in ("text", "number", "image"):
            if column not in table.column_names:
                raise DataError(f"{self.file}: no column {column!r} (columns: {', '.join(table.column_names)})")
        items = []
        for i, (text, number, image) in enumerate(zip(*(table.column(c).to_pylist() for c in ("text", "number", "image")))):
            data = image.get("bytes") if isinstance(image, dict) else image
            items.append({"image": {"bytes": data, "path": None} if data else None, "text": text,
                          "number": self._number(number, i)})
        return items

    def _number(self, value, i: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value not in COUNT_NUMBERS:
            raise DataError(f"{self.file}: item {i}: number: expected an integer in 2..10, got {value!r}")
        return value

    def __len__(self) -> int:
        return len(self.items)

    def evaluate(self, encoder, batch_size: int | None = None) -> dict[str, Any]:
        out = counting_accuracy(encoder, [i["image"] for i in self.items], [i["text"] for i in self.items],
                                [i["number"] for i in self.items], COUNT_NUMBERS, batch_size)
        out["num_missing"] = self.num_missing
        return out
