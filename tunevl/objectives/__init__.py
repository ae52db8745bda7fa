"""Training objectives: modules built on the pure loss functions in :mod:`tunevl.losses`.

Recipes name them by the short names in :data:`OBJECTIVES` or by a dotted import path.
"""

from tunevl.objectives.base import Objective
from tunevl.objectives.contrastive import Contrastive, Sigmoid
from tunevl.objectives.counting import Counting
from tunevl.objectives.negclip import NegClip
from tunevl.objectives.next_token import NextToken

OBJECTIVES: dict[str, type[Objective]] = {
    "contrastive": Contrastive,
    "sigmoid": Sigmoid,
    "counting": Counting,
    "negclip": NegClip,
    "next_token": NextToken,
}

__all__ = ["OBJECTIVES", "Contrastive", "Counting", "NegClip", "NextToken", "Objective", "Sigmoid"]
