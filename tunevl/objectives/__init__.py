"""Training objectives: modules built on the pure loss functions in :mod:`tunevl.losses`.

Recipes name them by the short names in :data:`OBJECTIVES` or by a dotted import path.
"""

from tunevl.objectives.base import Objective
from tunevl.objectives.contrastive import Contrastive

OBJECTIVES: dict[str, type[Objective]] = {
    "contrastive": Contrastive,
}

__all__ = ["OBJECTIVES", "Contrastive", "Objective"]
