"""CountBench-style counting accuracy (Paiss et al., ICCV 2023, https://arxiv.org/abs/2302.12066).

The protocol of the project page: replace the number in each caption by every number of two..ten,
score the image against the 9 captions, and take the number of the best one as the prediction.
Accuracy is the share of right predictions; the confusion matrix counts (true, predicted) pairs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from tunevl.data.tagging import NUMBER_WORDS
from tunevl.eval.compositional import embed_images, embed_texts

__all__ = ["COUNT_NUMBERS", "number_captions", "counting_accuracy", "plot_confusion"]

#: CountBench's numbers.
COUNT_NUMBERS: tuple[int, ...] = tuple(range(2, 11))


def _respell(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word.capitalize() if like[:1].isupper() else word


def number_captions(text: str, number: int, numbers: Sequence[int] = COUNT_NUMBERS) -> list[str] | None:
    """``text`` with the word for ``number`` replaced by each of ``numbers`` (capitalisation kept).

    The first occurrence of the word (case-insensitive, whole word) is replaced; when the word is
    missing, its digits are (``"10"`` -> ``"7"``). None when neither occurs.
    """
    for pattern, spell in ((rf"\b{NUMBER_WORDS[number]}\b", lambda n, m: _respell(NUMBER_WORDS[n], m)),
                           (rf"(?<![\d.,]){number}(?![\d.,]\d)", lambda n, m: str(n))):
        match = re.search(pattern, text, flags=re.IGNORECASE)
        if match:
            a, b = match.span()
            return [text[:a] + spell(n, match.group()) + text[b:] for n in numbers]
    return None


@torch.no_grad()
def counting_accuracy(encoder, images: Sequence, texts: Sequence[str], numbers_true: Sequence[int],
                      numbers: Sequence[int] = COUNT_NUMBERS, batch_size: int | None = None) -> dict:
    """Accuracy (percent) of picking the right number among ``numbers``, and the confusion matrix.

    Args:
        encoder: Anything with ``embed_images`` / ``embed_texts``.
        images: One image per item (path, PIL image, :class:`~tunevl.eval.compositional.ImageItem`).
        texts: The items' captions, each stating its number.
        numbers_true: The items' true numbers (each in ``numbers``).
        numbers: The candidate numbers; ties go to the first (smallest index), as ``np.argmax``.

    Returns:
        ``{"accuracy", "num_items", "confusion"}``; ``confusion[t][p]`` counts items of true number
        ``numbers[t]`` predicted as ``numbers[p]``. Items whose caption does not contain their number
        are left out and counted in ``num_skipped``.
    """
    numbers = list(numbers)
    keep, captions = [], []
    for k, (text, n) in enumerate(zip(texts, numbers_true)):
        options = number_captions(text, n, numbers) if n in numbers else None
        if options is not None:
            keep.append(k)
            captions += options
    confusion = [[0] * len(numbers) for _ in numbers]
    if not keep:
        return {"accuracy": 0.0, "num_items": 0, "num_skipped": len(texts), "confusion": confusion}
    img = embed_images(encoder, [images[k] for k in keep], batch_size)
    txt = embed_texts(encoder, captions, batch_size).reshape(len(keep), len(numbers), -1)
    scores = torch.einsum("nd,nkd->nk", img, txt)
    best = scores.max(dim=1, keepdim=True).values
    predicted = (scores == best).to(torch.int8).argmax(dim=1).tolist()
    hits = 0
    for k, p in zip(keep, predicted):
        t = numbers.index(numbers_true[k])
        confusion[t][p] += 1
        hits += t == p
    return {"accuracy": 100.0 * hits / len(keep), "num_items": len(keep), "num_skipped": len(texts) - len(keep),
            "confusion": confusion}


def plot_confusion(confusion: Sequence[Sequence[int]], path: str | Path, numbers: Sequence[int] = COUNT_NUMBERS,
                   title: str = "CountBench") -> Path:
    """Write the confusion matrix as a PNG (rows: true number, columns: predicted), normalised per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = torch.tensor(confusion, dtype=torch.float64)
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(numbers))
    ax.set_xticks(ticks, [str(n) for n in numbers])
    ax.set_yticks(ticks, [str(n) for n in numbers])
    ax.set_xlabel("predicted number")
    ax.set_ylabel("true number")
    accuracy = counts.diagonal().sum() / counts.sum().clamp(min=1)
    ax.set_title(f"{title}: accuracy {100 * accuracy:.1f}%")
    for t in ticks:
        for p in ticks:
            if counts[t, p] > 0:
                ax.text(p, t, int(counts[t, p]), ha="center", va="center", fontsize=7,
                        color="white" if rates[t, p] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
