"""Training objectives: modules built on the pure loss functions in :mod:`tunevl.losses`.

Recipes name them by the short names in :data:`OBJECTIVES` or by a dotted import path.
"""

from tunevl.objectives.base import Objective
from tunevl.objectives.contrastive import Contrastive, Sigmoid
from tunevl.objectives.next_token import NextToken
from tunevl.objectives.vladva import VladvaCaptions, VladvaContrastive

OBJECTIVES: dict[str, type[Objective]] = {
    "contrastive": Contrastive,
    "sigmoid": Sigmoid,
    "next_token": NextToken,
    "vladva_contrastive": VladvaContrastive,
    "vladva_captions": VladvaCaptions,
}

__all__ = ["OBJECTIVES", "Contrastive", "NextToken", "Objective", "Sigmoid", "VladvaCaptions", "VladvaContrastive"]
