"""Base-to-new generalisation (CoCoOp, https://arxiv.org/abs/2203.05557): train on the first half of the
classes, then measure accuracy on test images of the base classes among the base classes only, on test
images of the new classes among the new classes only, and their harmonic mean.

The halves follow CoCoOp's ``subsample_classes``: with ``n`` classes in label order, base is the first
``ceil(n / 2)`` (:func:`tunevl.data.fewshot.split_classes`). Train with ``data.train: {_component_: few_shot,
classes: base, ...}`` and evaluate on the full test split with ``eval.base_to_new: true``.
"""

from __future__ import annotations

import torch

from tunevl.data.fewshot import split_classes


def harmonic_mean(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def base_to_new_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``base_top1``, ``new_top1`` (percent) and ``harmonic_mean`` from ``[N, C]`` scores over all classes.

    A class's score does not depend on which other classes are candidates (one prompt per class), so
    each half is scored on its columns of the full matrix.

    Raises:
        ValueError: fewer than 2 classes, or no test image of a half's classes.
    """
    n_cls = scores.shape[1]
    if n_cls < 2:
        raise ValueError("base-to-new evaluation needs at least 2 classes")
    out = {}
    for name, classes in zip(("base", "new"), split_classes(n_cls)):
        cols = torch.tensor(classes)
        rows = torch.isin(labels, cols)
        if not rows.any():
            raise ValueError(f"base-to-new evaluation: no test image of the {name} classes ({classes[0]}..{classes[-1]})")
        pred = cols[scores[rows][:, cols].argmax(dim=1)]
        out[f"{name}_top1"] = 100.0 * (pred == labels[rows]).float().mean().item()
    out["harmonic_mean"] = harmonic_mean(out["base_top1"], out["new_top1"])
    return out
