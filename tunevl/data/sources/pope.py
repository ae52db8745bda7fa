"""POPE question files (``AoiDragon/POPE``, FORMATS.md §5): yes/no object-presence probes.

``output/coco/coco_pope_{random,popular,adversarial}.json`` are JSON Lines despite their name; the
SEEM-built GQA/A-OKVQA files are JSON arrays. Both are read. A record is
``{"image", "text": question, "answer": "yes"|"no", "question_id"}``; images are COCO val2014 (or GQA)
file names, resolved against ``image_root``. :func:`tunevl.eval.pope.pope_metrics` scores answers
with the official parsing.
"""

from __future__ import annotations

from tunevl.data.sources.tabular import _read_json_rows, _RowSource
from tunevl.errors import DataError


class PopeSource(_RowSource):
    """Records of a POPE question file.

    Args:
        path: ``coco_pope_random.json`` (JSONL) or a SEEM-built JSON array.
        image_root: The image folder (e.g. COCO ``val2014/``); default: the file's folder.
        prompt_suffix: Appended to every question, e.g. LLaVA's evaluation prompt
            ``"\\nAnswer the question using a single word or phrase."``.
        max_bad_images: Records with missing or unreadable images that pre-flight may drop.
    """

    def __init__(self, path: str, image_root: str | None = None, prompt_suffix: str = "", max_bad_images: int = 0):
        super().__init__(path, image_root, max_bad_images)
        rows, self._lines = _read_json_rows(self.file)
        self.columns = {"image": "image", "text": "text", "answer": "label"}
        self._rows = []
        for i, row in enumerate(rows):
            missing = [k for k in ("image", "text", "label") if row.get(k) is None]
            if missing:
                raise DataError(f"{self.location(i)}: a POPE question needs {', '.join(missing)}")
            label = str(row["label"]).strip().lower()
            if label not in ("yes", "no"):
                raise DataError(f"{self.location(i)}: label: expected 'yes' or 'no', got {row['label']!r}")
            self._rows.append({"image": row["image"], "text": f"{row['text']}{prompt_suffix}", "answer": label,
                               "question_id": row.get("question_id", i)})
