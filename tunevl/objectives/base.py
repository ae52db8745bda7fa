"""The objective contract: an encode step that asks the family view for what it needs,
and a loss step on those outputs built on the pure functions in :mod:`tunevl.losses`."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


class Objective(nn.Module):
    """Base class of weighted training objectives.

    Subclasses set ``requires`` (record fields they need), ``families`` (views that
    can serve them) and implement :meth:`encode` and :meth:`loss`. The total training
    loss is ``sum(weight * term)`` over every objective's named terms.

    Args:
        weight: Multiplier of this objective's terms in the total loss.
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    families: ClassVar[tuple[str, ...]] = ()

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)

    def encode(self, view, batch: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def loss(self, **outputs: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, view, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.loss(**self.encode(view, batch))
