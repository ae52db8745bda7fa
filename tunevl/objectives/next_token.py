"""Next-token prediction on conversations (supervised fine-tuning of generative LVLMs)."""

from __future__ import annotations

from typing import Any

import torch

from tunevl.losses import next_token_loss
from tunevl.losses.sequence import sequence_token_counts
from tunevl.models.registry import GENERATIVE
from tunevl.objectives.base import Objective


class NextToken(Objective):
    """Mean cross entropy of the assistant tokens, through the chunked log-prob path.

    The mean is over every labelled token of the optimizer step (all micro-batches, all ranks), so
    a token weighs the same whether its micro-batch holds short or long answers (:meth:`counts`).

    The family view returns last hidden states (never ``[B, T, V]`` logits) and the lm head
    module; :func:`tunevl.losses.next_token_loss` scores ``chunk_size`` positions at a time.

    Args:
        weight: Multiplier in the total loss.
        chunk_size: Positions per lm-head call; peak logits memory is ``chunk_size x vocab``.
    """

    requires = frozenset({"messages"})
    families = GENERATIVE

    def __init__(self, weight: float = 1.0, chunk_size: int = 1024):
        super().__init__(weight)
        self.chunk_size = chunk_size

    def counts(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Labelled tokens: the term is a mean over the step's tokens, however they are split."""
        return {"next_token": sequence_token_counts(batch["labels"]).sum()}

    def encode(self, view, batch: dict[str, Any]) -> dict[str, Any]:
        return {"hidden_states": view.last_hidden_state(batch), "lm_head": view.lm_head_module, "labels": batch["labels"]}

    def loss(self, hidden_states, lm_head, labels) -> dict[str, torch.Tensor]:
        return {"next_token": next_token_loss(hidden_states, lm_head, labels, self.chunk_size)}
