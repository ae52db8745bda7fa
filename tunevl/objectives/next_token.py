"""Next-token prediction on conversations (supervised fine-tuning of generative LVLMs)."""

from __future__ import annotations

from typing import Any

import torch

from tunevl.losses import next_token_loss
from tunevl.objectives.base import Objective


class NextToken(Objective):
    """Mean cross entropy of the assistant tokens, through the chunked log-prob path.

    The family view returns last hidden states (never ``[B, T, V]`` logits) and the lm head
    module; :func:`tunevl.losses.next_token_loss` scores ``chunk_size`` positions at a time.

    Args:
        weight: Multiplier in the total loss.
        chunk_size: Positions per lm-head call; peak logits memory is ``chunk_size x vocab``.
    """

    requires = frozenset({"messages"})
    families = ("llava", "qwen2_vl")

    def __init__(self, weight: float = 1.0, chunk_size: int = 1024):
        super().__init__(weight)
        self.chunk_size = chunk_size

    def encode(self, view, batch: dict[str, Any]) -> dict[str, Any]:
        return {"hidden_states": view.last_hidden_state(batch), "lm_head": view.lm_head_module, "labels": batch["labels"]}

    def loss(self, hidden_states, lm_head, labels) -> dict[str, torch.Tensor]:
        return {"next_token": next_token_loss(hidden_states, lm_head, labels, self.chunk_size)}
