"""Image-text retrieval recall@k with the standard multi-caption semantics.

An image query is a hit at k when any of its captions is among the k nearest texts;
a text query is a hit when its image is among the k nearest images. When several
images share one caption string (synthetic sets), a text query counts every image
carrying that caption as relevant, and identical caption strings are de-duplicated.
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
        order = sim.argsort(dim=1, descending=True)
        ranked_rel = rel.gather(1, order)
        for k in ks:
            hits = ranked_rel[:, : min(k, ranked_rel.shape[1])].any(dim=1).float()
            out[f"{direction}_R@{k}"] = 100.0 * hits.mean().item()
    return out


def caption_relevance(captions_per_image: Sequence[Sequence[str]]) -> tuple[list[str], torch.Tensor]:
    """De-duplicate caption strings and build the [n_images, n_texts] relevance matrix."""
    texts: list[str] = []
    position: dict[str, int] = {}
    for caps in captions_per_image:
        for c in caps:
            if c not in position:
                position[c] = len(texts)
                texts.append(c)
    relevant = torch.zeros(len(captions_per_image), len(texts), dtype=torch.bool)
    for i, caps in enumerate(captions_per_image):
        for c in caps:
            relevant[i, position[c]] = True
    return texts, relevant


def _captions(record: dict) -> list[str]:
    if "captions" in record:
        return list(record["captions"])
    return [record["text"]]


@torch.no_grad()
def evaluate_retrieval(encoder, records: Sequence[dict], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k of a :class:`tunevl.inference.DualEncoder`-like object on records with ``image`` and ``text``/``captions``."""
    texts, relevant = caption_relevance([_captions(r) for r in records])
    image_embeds = encoder.embed_images([r["image"] for r in records])
    text_embeds = encoder.embed_texts(texts)
    metrics = recall_at_k(image_embeds @ text_embeds.T, relevant, ks)
    metrics["num_images"], metrics["num_texts"] = len(records), len(texts)
    return metrics
