"""Training objectives: modules built on the pure loss functions in :mod:`tunevl.losses`.

Recipes name them by the short names in :data:`OBJECTIVES` or by a dotted import path.
"""

from tunevl.objectives.base import Objective
from tunevl.objectives.classification import Classification
from tunevl.objectives.contrastive import Contrastive, Sigmoid
from tunevl.objectives.counting import Counting
from tunevl.objectives.negclip import NegClip
from tunevl.objectives.next_token import NextToken
from tunevl.objectives.preference import DPO, SVCO
from tunevl.objectives.vladva import VladvaCaptions, VladvaContrastive

OBJECTIVES: dict[str, type[Objective]] = {
    "contrastive": Contrastive,
    "sigmoid": Sigmoid,
    "counting": Counting,
    "negclip": NegClip,
    "next_token": NextToken,
    "dpo": DPO,
    "svco": SVCO,
    "classification": Classification,
    "vladva_contrastive": VladvaContrastive,
    "vladva_captions": VladvaCaptions,
}

__all__ = ["DPO", "OBJECTIVES", "SVCO", "Classification", "Contrastive", "Counting", "NegClip", "NextToken", "Objective",
           "Sigmoid", "VladvaCaptions", "VladvaContrastive"]
