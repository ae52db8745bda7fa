"""Image-text retrieval recall@k with the standard multi-caption semantics.

An image query is a hit at k when any of its captions is among the k nearest texts;
a text query is a hit when its image is among the k nearest images. With several
captions per image (COCO and Flickr30k have 5) every caption is its own text query,
relevant only to its own image: the standard protocol.

When several images share one caption string (synthetic sets, where "three red
circles" describes many images), identical strings can instead be pooled into one
text query that counts every image carrying it as relevant (``dedupe=True``). By
default they are pooled for records with one ``text`` each and kept apart for records
with ``captions``.
"""

from __future__ import annotations

from typing import Sequence

import torch


def recall_at_k(similarity: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k in both directions.

    Args:
        similarity: [n_images, n_texts] scores.
        relevant: [n_images, n_texts] bool, True where the text describes the image.
        ks: The k values.

    Returns:
        ``{"i2t_R@k": ..., "t2i_R@k": ...}`` as percentages.
    """
    if similarity.shape != relevant.shape:
        raise ValueError(f"similarity {tuple(similarity.shape)} and relevance {tuple(relevant.shape)} differ")
    out = {}
    for direction, sim, rel in (("i2t", similarity, relevant), ("t2i", similarity.T, relevant.T)):
        hits = _hits(sim, rel, ks)
        out.update({f"{direction}_R@{k}": 100.0 * h / max(sim.shape[0], 1) for k, h in hits.items()})
    return out


def _hits(sim: torch.Tensor, rel: torch.Tensor, ks: Sequence[int]) -> dict[int, int]:
    """Per k, how many rows (queries) have a relevant column among their k highest scores."""
    k_max = min(max(ks), sim.shape[1])
    top = sim.topk(k_max, dim=1).indices
    ranked = rel.gather(1, top)
    return {k: int(ranked[:, : min(k, k_max)].any(dim=1).sum()) for k in ks}


def retrieval_metrics(image_embeds: torch.Tensor, text_embeds: torch.Tensor, relevant: torch.Tensor,
                      ks: Sequence[int] = (1, 5, 10), chunk: int = 1024) -> dict[str, float]:
    """:func:`recall_at_k` of ``image_embeds @ text_embeds.T``, computed in row chunks.

    The full [n_images, n_texts] score matrix is never held (5k COCO images × 25k captions
    would need 500 MB, and a full sort of it twice that).
    """
    out = {}
    for direction, queries, keys, rel in (("i2t", image_embeds, text_embeds, relevant),
                                          ("t2i", text_embeds, image_embeds, relevant.T)):
        total = dict.fromkeys(ks, 0)
        for start in range(0, queries.shape[0], chunk):
            sim = queries[start : start + chunk].float() @ keys.float().T
            for k, h in _hits(sim, rel[start : start + chunk], ks).items():
                total[k] += h
        out.update({f"{direction}_R@{k}": 100.0 * total[k] / max(queries.shape[0], 1) for k in ks})
    return out


def caption_relevance(captions_per_image: Sequence[Sequence[str]], dedupe: bool = True) -> tuple[list[str], torch.Tensor]:
    """The text queries and the [n_images, n_texts] relevance matrix.

    Args:
        captions_per_image: The captions of each image.
        dedupe: Pool identical caption strings into one query relevant to every image
            that carries it; otherwise every caption is a query relevant to its own image.
    """
    texts: list[str] = []
    owners: list[list[int]] = []
    position: dict[str, int] = {}
    for i, caps in enumerate(captions_per_image):
        for c in caps:
            if dedupe and c in position:
                owners[position[c]].append(i)
                continue
            position[c] = len(texts)
            texts.append(c)
            owners.append([i])
    relevant = torch.zeros(len(captions_per_image), len(texts), dtype=torch.bool)
    for j, images in enumerate(owners):
        relevant[images, j] = True
    return texts, relevant


def record_captions(record: dict) -> list[str] | None:
    """A record's captions: ``captions``, else ``[text]``, else None."""
    if record.get("captions") is not None:
        return list(record["captions"])
    if record.get("text") is not None:
        return [record["text"]]
    return None


@torch.no_grad()
def evaluate_retrieval(encoder, records: Sequence[dict], ks: Sequence[int] = (1, 5, 10),
                       dedupe: bool | None = None) -> dict[str, float]:
    """Recall@k of a :class:`tunevl.inference.DualEncoder`-like object on records with ``image`` and ``text``/``captions``.

    Args:
        encoder: Has ``embed_images`` and ``embed_texts`` (unit vectors).
        records: A sequence of records (a dataset works).
        ks: The k values.
        dedupe: Pool identical caption strings (see the module docstring); None pools
            unless the records carry ``captions``.
    """
    from tunevl.eval import evaluate
    from tunevl.train.config import EvalConfig

    cfg = EvalConfig(retrieval=True, ks=list(ks), dedupe_captions=dedupe, zeroshot=False)
    return evaluate(encoder, records, cfg)
