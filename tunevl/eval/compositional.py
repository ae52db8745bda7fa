"""Compositional evaluation: does the model prefer the true caption (or image) over a near miss?

Scoring rules of the official code of each benchmark (FORMATS.md), on cosine similarities of
normalised embeddings. Every function takes an *encoder*: any object with ``embed_images(list)`` and
``embed_texts(list)`` returning ``[N, D]`` tensors (a :class:`tunevl.inference.DualEncoder`, a base
checkpoint, an LVLM embedder); embeddings are normalised again here, so unnormalised ones work too.

* :func:`pair_accuracy` (SugarCrepe): an item is right when ``s(image, caption) > s(image, negative)``;
  a tie is wrong.
* :func:`option_correct` (ARO): the prediction is the first option with the highest score
  (``np.argmax``), so a tie with an earlier option is wrong unless the earlier one is the answer.
* :func:`winoground_scores`: text, image and group scores.
* :func:`mmvp_pair_correct` (MMVP-VLM): each statement picks one of the pair's two images.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from tunevl.data.images import load_image

__all__ = [
    "ImageItem", "embed_images", "embed_texts", "pair_accuracy", "option_correct", "grouped_accuracy",
    "winoground_scores", "mmvp_pair_correct",
]


class ImageItem:
    """An image to embed later: a path, :class:`~tunevl.data.images.ImageRef` or PIL image, optionally cropped.

    Args:
        image: What :func:`tunevl.data.images.load_image` opens.
        box: ``(x, y, w, h)`` in pixels to crop to (ARO's ``bbox_*``), or None.
    """

    __slots__ = ("image", "box")

    def __init__(self, image: Any, box: tuple[float, float, float, float] | None = None):
        self.image, self.box = image, box

    def open(self):
        image = load_image(self.image)
        if self.box is None:
            return image
        x, y, w, h = self.box
        return image.crop((x, y, x + w, y + h))  # PIL's (left, upper, right, lower), as ARO crops


def _batch_size(encoder, batch_size: int | None) -> int:
    return batch_size or getattr(encoder, "batch_size", None) or 64


@torch.no_grad()
def embed_images(encoder, images: Sequence, batch_size: int | None = None) -> torch.Tensor:
    """``[N, D]`` unit embeddings of ``images`` (paths, PIL images or :class:`ImageItem`), decoded a batch at a time."""
    step = _batch_size(encoder, batch_size)
    out = []
    for start in range(0, len(images), step):
        chunk = [im.open() if isinstance(im, ImageItem) else load_image(im) for im in images[start:start + step]]
        out.append(encoder.embed_images(chunk).float().cpu())
    if not out:
        raise ValueError("no images to embed")
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def embed_texts(encoder, texts: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
    """``[N, D]`` unit embeddings of ``texts``; each distinct string is embedded once."""
    unique = list(dict.fromkeys(texts))
    position = {t: k for k, t in enumerate(unique)}
    step = max(_batch_size(encoder, batch_size), 1)
    parts = [encoder.embed_texts(unique[s:s + step]).float().cpu() for s in range(0, len(unique), step)]
    if not parts:
        raise ValueError("no texts to embed")
    table = F.normalize(torch.cat(parts), dim=-1)
    return table[torch.tensor([position[t] for t in texts])]


def pair_accuracy(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Per item, ``positive > negative`` (strict: ties are wrong), as a bool tensor."""
    return positive > negative


def option_correct(scores: torch.Tensor, answer: int | torch.Tensor) -> torch.Tensor:
    """Per row of ``scores`` ``[N, K]``, whether the first highest-scoring option is ``answer``."""
    best = scores.max(dim=1, keepdim=True).values
    first = (scores == best).to(torch.int8).argmax(dim=1)  # first index of the maximum, as np.argmax
    return first == torch.as_tensor(answer)


def grouped_accuracy(correct: Sequence[bool] | torch.Tensor, groups: Sequence[str]) -> dict[str, tuple[float, int]]:
    """``{group: (accuracy in 0..1, count)}`` in sorted group order."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for ok, g in zip([bool(c) for c in correct], groups):
        hits[g].append(ok)
    return {g: (sum(v) / len(v), len(v)) for g, v in sorted(hits.items())}


def winoground_scores(c0_i0: torch.Tensor, c0_i1: torch.Tensor, c1_i0: torch.Tensor,
                      c1_i1: torch.Tensor) -> dict[str, torch.Tensor]:
    """Winoground's per-example text, image and group correctness from ``s(caption_j, image_k)``.

    text: ``c0_i0 > c1_i0 and c1_i1 > c0_i1`` (each image picks its caption); image:
    ``c0_i0 > c0_i1 and c1_i1 > c1_i0`` (each caption picks its image); group: both.
    """
    text = (c0_i0 > c1_i0) & (c1_i1 > c0_i1)
    image = (c0_i0 > c0_i1) & (c1_i1 > c1_i0)
    return {"text": text, "image": image, "group": text & image}


def mmvp_pair_correct(t1_i1: torch.Tensor, t1_i2: torch.Tensor, t2_i1: torch.Tensor, t2_i2: torch.Tensor,
                      qid1: torch.Tensor, qid2: torch.Tensor) -> torch.Tensor:
    """MMVP-VLM: each statement picks image 1 when its softmax over the two images gives image 1 more
    than 0.5, i.e. when ``s(t, i1) > s(t, i2)`` (a tie picks image 2); the right image of a statement
    is image 1 for an odd question id, image 2 for an even one; a pair counts when both are right."""
    pick1_1, pick1_2 = t1_i1 > t1_i2, t2_i1 > t2_i2
    return (pick1_1 == (qid1 % 2 == 1)) & (pick1_2 == (qid2 % 2 == 1))
