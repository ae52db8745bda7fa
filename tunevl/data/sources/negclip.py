"""NegCLIP's training TSV (``vinid/neg_clip``; ``train_neg_clip.tsv`` / ``valid_neg_clip.tsv``), read natively.

Layout (FORMATS.md section 11): tab-separated with a header; an unnamed first column (the pandas
index, ignored); ``title`` (the caption), ``filepath`` (the image, relative to the data root),
``neg_caption`` (a Python list of hard-negative captions) and ``neg_image`` (a Python list of row
positions, 0-based, into the same file: the image's nearest neighbours).

Each record carries its image and caption, its hard captions (``negatives``) and one neighbour:
``negative_image``, ``negative_image_text`` (the neighbour's caption) and ``negative_image_negatives``
(the neighbour's hard captions), which is what the ``negclip`` objective's batch layout needs.
"""

from __future__ import annotations

import random
from typing import Any

from tunevl.data.sources.base import parse_list_cell
from tunevl.data.sources.tabular import CsvSource
from tunevl.errors import DataError

_NEIGHBOUR_FIELDS = ("negative_image", "negative_image_text", "negative_image_negatives")


class NegClipTsv(CsvSource):
    """Records from NegCLIP's TSV: caption, image, hard captions and one hard-negative image with its captions.

    NegCLIP's loader draws one of the ``neg_image`` neighbours anew at each access; here the
    neighbour of record ``i`` is a fixed draw from ``(seed, i)``, so every process and a resumed
    run see the same data. (The ``negclip`` objective draws the hard captions the same way.)

    Args:
        path: The ``.tsv`` file.
        image_root: Folder the ``filepath`` values are relative to (NegCLIP runs from the folder
            holding ``coco/``); default: the file's folder.
        columns: Overrides of the column names: ``{text: title, image: filepath, negatives: neg_caption,
            neighbours: neg_image}``.
        seed: Seed of the neighbour draw.
        max_bad_images: Records with missing or unreadable images that pre-flight may drop.
    """

    def __init__(self, path: str, image_root: str | None = None, columns: dict[str, str] | None = None,
                 seed: int = 0, max_bad_images: int = 0):
        names = {"text": "title", "image": "filepath", "negatives": "neg_caption", "neighbours": "neg_image",
                 **(columns or {})}
        unknown = set(names) - {"text", "image", "negatives", "neighbours"}
        if unknown:
            raise DataError(f"unknown field(s) {sorted(unknown)}; NegCLIP's TSV maps text, image, negatives "
                            "and neighbours", arg="columns")
        super().__init__(path, columns=names, image_root=image_root, delimiter="\t", max_bad_images=max_bad_images)
        self.seed = seed
        n = len(self._rows)
        self._neighbours: list[list[int] | None] = []
        for i, row in enumerate(self._rows):
            value = row.pop("neighbours", None)
            if value is None:
                self._neighbours.append(None)
                continue
            where = f"{self.location(i)}: {names['neighbours']}"
            try:
                ids = parse_list_cell(value)
            except (ValueError, SyntaxError):
                raise DataError(f"{where}: expected a list of row numbers, got {value[:40]!r}") from None
            if not ids or not all(isinstance(j, int) and not isinstance(j, bool) for j in ids):
                raise DataError(f"{where}: expected a non-empty list of row numbers, got {value[:40]!r}")
            bad = [j for j in ids if not 0 <= j < n]
            if bad:
                raise DataError(f"{where}: row {bad[0]} is out of range: the file has rows 0..{n - 1}")
            self._neighbours.append(ids)
        self.columns.pop("neighbours", None)
        for field in _NEIGHBOUR_FIELDS:
            self.columns[field] = names["neighbours"]

    def neighbour(self, i: int) -> int | None:
        """The row whose image is record ``i``'s hard negative (a fixed draw from its ``neg_image``)."""
        ids = self._neighbours[i]
        return None if ids is None else random.Random(f"negclip/{self.seed}/{i}").choice(ids)

    def _record(self, i: int) -> dict[str, Any]:
        rec = dict(self._rows[i])
        j = self.neighbour(i)
        if j is not None:
            other = self._rows[j]
            rec.update({"negative_image": other.get("image"), "negative_image_text": other.get("text"),
                        "negative_image_negatives": other.get("negatives")})
        return {k: v for k, v in rec.items() if v is not None}

    def first_missing(self, field: str) -> int | None:
        if field in _NEIGHBOUR_FIELDS:
            return next((i for i in range(len(self)) if self._record(i).get(field) is None), None)
        return super().first_missing(field)
