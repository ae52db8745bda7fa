"""MMVP-VLM (Tong et al., CVPR 2024, https://arxiv.org/abs/2401.06209): ``MMVP/MMVP_VLM``'s ``Questions.csv``
(``Question ID,Type,Statement``) and ``<image folder>/<Type>/<qid>.jpg``, scored as ``scripts/evaluate_vlm.py``."""

from __future__ import annotations

import csv
import os
from typing import Any

import torch

from tunevl.errors import DataError
from tunevl.eval.benchmarks.base import Benchmark, absolute, check_images, existing_folder
from tunevl.eval.compositional import embed_images, embed_texts, mmvp_pair_correct

#: The nine visual patterns, 15 pairs each, in file order (``evaluate_vlm.py``).
CATEGORIES = ("Orientation and Direction", "Presence of Specific Features", "State and Condition", "Quantity and Count",
              "Positional and Relational Context", "Color and Appearance", "Structural Characteristics", "Texts",
              "Viewpoint and Perspective")
PAIRS_PER_CATEGORY = 15
#: Image folder names: the README's, and the one ``evaluate_vlm.py`` opens.
IMAGE_FOLDERS = ("MMVP_VLM_Images", "MLLM_VLM Images")


class MmvpVlm(Benchmark):
    """MMVP-VLM's 150 statement pairs: each statement must pick its own image of the pair.

    Args:
        path: ``Questions.csv``, or the folder holding it.
        image_root: The image folder (with one sub-folder per ``Type``); default: ``MMVP_VLM_Images``
            or ``MLLM_VLM Images`` beside the CSV.
        prompt: Prefix of each statement (``evaluate_vlm.py``: ``"a photo of "``).
        name: Metric prefix.
        max_samples: First N pairs.

    Metrics: per category, the percent of pairs where both statements pick their image (the
    category of pair ``k`` is ``CATEGORIES[k // 15]``); ``average`` over the categories; ``num_pairs``.
    A statement picks the first image when its softmax over the two images exceeds 0.5, i.e. when
    it scores that image strictly higher (a tie picks the second).
    """

    key = "mmvp_vlm"

    def __init__(self, path: str, image_root: str | None = None, prompt: str = "a photo of ", name: str | None = None,
                 max_samples: int | None = None):
        super().__init__(name, max_samples)
        full = absolute(path)
        if os.path.isdir(full):
            full = os.path.join(full, "Questions.csv")
        if not os.path.isfile(full):
            raise DataError(f"no such file: {full}", arg="path")
        self.file, self.prompt = full, prompt
        if image_root is not None:
            folder = existing_folder(image_root)
        else:
            found = [os.path.join(os.path.dirname(full), f) for f in IMAGE_FOLDERS]
            folder = next((f for f in found if os.path.isdir(f)), None)
            if folder is None:
                raise DataError(f"no image folder {' or '.join(repr(f) for f in IMAGE_FOLDERS)} beside {full}; "
                                "set image_root", arg="image_root")
        with open(full, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            raise DataError(f"{full}: the file is empty")
        body = rows[1:]  # header: Question ID,Type,Statement
        self.pairs = []
        for k in range(0, len(body) - 1, 2):  # rows two at a time; a lone last row is dropped, as upstream
            pair = []
            for offset in (0, 1):
                row = body[k + offset]
                line = k + offset + 2
                if len(row) != 3:
                    raise DataError(f"{full}:{line}: expected 3 cells (Question ID, Type, Statement), got {len(row)}")
                try:
                    qid = int(row[0])
                except ValueError:
                    raise DataError(f"{full}:{line}: Question ID: expected an integer, got {row[0]!r}") from None
                pair.append((qid, row[1], row[2], line))
            qtype = pair[0][1]  # both images come from the first row's folder, as upstream
            self.pairs.append({"qids": [p[0] for p in pair], "statements": [p[2] for p in pair],
                               "images": [os.path.join(folder, qtype, f"{p[0]}.jpg") for p in pair],
                               "where": f"{full}:{pair[0][3]}", "category": CATEGORIES[min(len(self.pairs) // PAIRS_PER_CATEGORY,
                                                                                              len(CATEGORIES) - 1)]})
        self.pairs = self._cap(self.pairs)
        check_images([p for q in self.pairs for p in q["images"]], [q["where"] for q in self.pairs for _ in (0, 1)], full)

    def __len__(self) -> int:
        return len(self.pairs)

    def evaluate(self, encoder, batch_size: int | None = None) -> dict[str, Any]:
        n = len(self.pairs)
        image = embed_images(encoder, [p for q in self.pairs for p in q["images"]], batch_size).reshape(n, 2, -1)
        text = embed_texts(encoder, [self.prompt + s for q in self.pairs for s in q["statements"]], batch_size).reshape(n, 2, -1)
        qids = torch.tensor([q["qids"] for q in self.pairs])
        s = {(t, i): (text[:, t] * image[:, i]).sum(-1) for t in (0, 1) for i in (0, 1)}
        correct = mmvp_pair_correct(s[0, 0], s[0, 1], s[1, 0], s[1, 1], qids[:, 0], qids[:, 1])
        out: dict[str, Any] = {}
        for category in CATEGORIES:
            rows = [k for k, q in enumerate(self.pairs) if q["category"] == category]
            if rows:
                out[category] = 100.0 * correct[rows].float().mean().item()
        out["average"] = sum(out.values()) / len(out)
        out["num_pairs"] = n
        return out
