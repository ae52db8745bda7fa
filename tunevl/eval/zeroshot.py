"""Zero-shot classification: images against prompts built from class names (CLIP, https://arxiv.org/abs/2103.00020).

With several prompt templates, each class embedding is the mean of its normalised
template embeddings, normalised again (CLIP's prompt ensembling).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


def check_templates(templates: str | Sequence[str]) -> list[str]:
    """The templates as a list; each must have ``{}`` where the class name goes."""
    items = [templates] if isinstance(templates, str) else list(templates)
    if not items:
        raise ValueError("give at least one prompt template, e.g. 'a photo of a {}.'")
    for t in items:
        if "{}" not in t:
            raise ValueError(f"prompt template {t!r} has no '{{}}' for the class name")
    return items


@torch.no_grad()
def class_embeddings(embed_texts: Callable[[list[str]], torch.Tensor], classnames: Sequence[str],
                     templates: str | Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
    """[C, D] unit class embeddings: the renormalised mean over templates of the prompt embeddings.

    Args:
        embed_texts: Strings → [N, D] embeddings (normalised or not; each is normalised first).
        classnames: The C class names.
        templates: Prompt templates with ``{}`` for the class name.
    """
    templates = check_templates(templates)
    prompts = [t.format(c) for c in classnames for t in templates]
    embeds = F.normalize(embed_texts(prompts).float(), dim=-1)
    return F.normalize(embeds.reshape(len(classnames), len(templates), -1).mean(dim=1), dim=-1)


def zeroshot_metrics(image_embeds: torch.Tensor, class_embeds: torch.Tensor, labels: torch.Tensor,
                     ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy and mean per-class recall (top-1), as percentages.

    Args:
        image_embeds: [N, D] unit image embeddings.
        class_embeds: [C, D] unit class embeddings.
        labels: [N] class indices.
        ks: The k values of top-k accuracy; those >= C (always 100%) are left out, except 1.

    Returns:
        ``{"zeroshot_top1": ..., "zeroshot_top5": ..., "zeroshot_mean_per_class": ...}``.
    """
    return score_metrics(image_embeds.float() @ class_embeds.float().T, labels, ks)


def score_metrics(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5),
                  prefix: str = "zeroshot") -> dict[str, float]:
    """:func:`zeroshot_metrics` from an [N, C] score matrix (any scores whose argmax is the prediction)."""
    k_max = min(max(ks), scores.shape[1])
    top = scores.topk(k_max, dim=1).indices
    correct = top == labels.reshape(-1, 1)
    # top-k for k >= C is 100% by construction: left out.
    out = {f"{prefix}_top{k}": 100.0 * correct[:, :k].any(dim=1).float().mean().item()
           for k in ks if k == 1 or k < scores.shape[1]}
    top1 = correct[:, 0].float()
    per_class = [top1[labels == c].mean().item() for c in labels.unique()]
    out[f"{prefix}_mean_per_class"] = 100.0 * sum(per_class) / len(per_class)
    return out
