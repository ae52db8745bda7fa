"""VladVA: discriminative fine-tuning of a generative LVLM (Ouali et al., CVPR 2025, https://arxiv.org/abs/2412.04378).

Two objectives, used together in one recipe (a plain sum by default; each has its ``weight``):

- :class:`VladvaContrastive` (``vladva_contrastive``): symmetric InfoNCE between the image tower's and the
  text tower's summary embeddings (:mod:`tunevl.models.embedder`) on the records that carry a short caption
  (``text``), gathered across ranks.
- :class:`VladvaCaptions` (``vladva_captions``): next-token loss on the long captions (``long_text``),
  conditioned on the image and the image prompt (its soft prompt in place), so the summary position learns
  to predict the whole description. A contrastive loss on long captions collapses within a few hundred
  steps in the paper; this is its replacement.

Records carry ``image`` and ``text``, ``long_text`` or both; the ``length_split`` data source routes one
caption column by token count. Each objective covers the records that carry its field; when a rank's
micro-batch has none, the objective still runs its graph on a stand-in (the first record) whose
contribution is cut off (zero rows, zero labelled tokens), because every rank must run every graph
every step (ZeRO-3). The view needs ``adapters.embedding_prompts``.

They are two objectives, not one, so that the contrastive part is a pure embedding objective (``encode``
returns embeddings and a scale; GradCache can cache and re-encode it in chunks), while the next-token
part is a per-token term normalised over the step's labelled tokens, which needs no cache.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from tunevl.losses import info_nce, next_token_loss
from tunevl.losses.sequence import sequence_token_counts
from tunevl.models.chat import record_images
from tunevl.models.embedder import IMAGE, embed_image_batch, embed_text_batch, hidden_states, image_batch, text_batch
from tunevl.models.registry import GENERATIVE
from tunevl.objectives.base import Objective

__all__ = ["VladvaCaptions", "VladvaContrastive"]


def _rows(records: list[dict], field: str) -> list[int]:
    return [i for i, r in enumerate(records) if r.get(field) is not None]


class VladvaContrastive(Objective):
    """Symmetric InfoNCE of [image + image prompt] against [short caption + text prompt] summary embeddings.

    Its term is a mean over the micro-batch's pairs gathered across ranks (no count): the negatives are
    the micro-batch, so accumulation changes the task; ``train.grad_cache_chunk_size`` is the way to the
    paper's batch of 1024 (a micro-batch of 1024 gathered, encoded in chunks).

    Args:
        weight: Multiplier in the total loss.
        temperature: Softmax temperature of the cosine similarities (the logit scale is its inverse). The
            paper does not give it; 0.05 is E5-V's and SimCSE's.
        local_loss: Each rank scores only its own rows against the gathered batch (open_clip's local loss).
    """

    requires = frozenset({"image"})
    families = GENERATIVE
    # GradCache: the rows are those of the records with a caption, image and text rows paired alike.
    embedding_loss = True
    ragged_outputs = frozenset({"image_embeds", "text_embeds"})
    #: The recipe must have this adapter (``tunevl validate`` checks it).
    needs_adapter: ClassVar[str] = "embedding_prompts"

    def __init__(self, weight: float = 1.0, temperature: float = 0.05, local_loss: bool = False):
        super().__init__(weight)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.local_loss = local_loss

    def collate(self, view, records: list[dict]) -> dict[str, Any]:
        """Image and caption sequences of the records with ``text`` (a stand-in of the first record when none)."""
        rows = _rows(records, "text")
        run = rows or [0]
        return {
            "vladva_images": image_batch(view, [record_images(records[i]) for i in run]),
            "vladva_texts": text_batch(view, [records[i]["text"] if rows else "" for i in run]),
            "vladva_pairs": len(rows),
        }

    def encode(self, view, batch: dict[str, Any]) -> dict[str, Any]:
        n = batch["vladva_pairs"]
        image = F.normalize(embed_image_batch(view, batch["vladva_images"]).float(), dim=-1)
        text = F.normalize(embed_text_batch(view, batch["vladva_texts"]).float(), dim=-1)
        return {"image_embeds": image[:n], "text_embeds": text[:n], "logit_scale": 1.0 / self.temperature}

    def loss(self, image_embeds, text_embeds, logit_scale) -> dict[str, torch.Tensor]:
        return {"contrastive": info_nce(image_embeds, text_embeds, logit_scale, local_loss=self.local_loss)}


class VladvaCaptions(Objective):
    """Next-token loss on long captions after [image + image prompt], the image soft prompt in place.

    A mean over the step's labelled caption tokens (all micro-batches and ranks, :meth:`counts`), as
    ``next_token``: a token weighs the same in every micro-batch.

    Args:
        weight: Multiplier in the total loss (the paper sums the two losses: 1).
        chunk_size: Positions per lm-head call; peak logits memory is ``chunk_size x vocab``.
    """

    requires = frozenset({"image"})
    families = GENERATIVE
    needs_adapter: ClassVar[str] = "embedding_prompts"

    def __init__(self, weight: float = 1.0, chunk_size: int = 1024):
        super().__init__(weight)
        self.chunk_size = chunk_size

    def collate(self, view, records: list[dict]) -> dict[str, Any]:
        """[image + image prompt + long caption] sequences, captions labelled (a stand-in without labels when none)."""
        rows = _rows(records, "long_text")
        if not rows:
            return {"vladva_captions": image_batch(view, [record_images(records[0])], padding_side="right")}
        images = [record_images(records[i]) for i in rows]
        answers = [records[i]["long_text"] for i in rows]
        return {"vladva_captions": image_batch(view, images, answers=answers, padding_side="right")}

    def counts(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Labelled caption tokens (0 for a stand-in)."""
        return {"next_token": sequence_token_counts(batch["vladva_captions"]["labels"]).sum()}

    def encode(self, view, batch: dict[str, Any]) -> dict[str, Any]:
        captions = batch["vladva_captions"]
        return {"hidden_states": hidden_states(view, captions, IMAGE), "lm_head": view.lm_head_module,
                "labels": captions["labels"]}

    def loss(self, hidden_states, lm_head, labels) -> dict[str, torch.Tensor]:
        return {"next_token": next_token_loss(hidden_states, lm_head, labels, self.chunk_size)}
