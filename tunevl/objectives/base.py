"""The objective contract: an encode step that asks the family view for what it needs,
and a loss step on those outputs built on the pure functions in :mod:`tunevl.losses`."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


class Objective(nn.Module):
    """Base class of weighted training objectives.

    Subclasses set ``requires`` (record fields every record must carry), ``families``
    (views that can serve them: a kind from the family registry, ``tunevl.models.registry.GENERATIVE``
    or ``DUAL_ENCODER``, so a new family needs no edit here) and implement :meth:`encode` and :meth:`loss`. The total
    training loss is ``sum(weight * term)`` over every objective's named terms.

    **Batch layout.** The view collates the shared fields (``pixel_values``, the record's own
    ``input_ids``/``labels``...) once for all objectives. An objective that needs tensors of its
    own (counterfactual captions, chosen/rejected sequences...) overrides :meth:`collate`; it runs
    in the data-loader workers, and its output is seen by this objective only, merged over the
    shared batch in :meth:`encode`, :meth:`counts` and the loss, so two objectives never clash.

    **Loss normalisation** (DESIGN.md, "losses are normalised over the optimizer step"). A step's
    gradient must not depend on how its global batch is split into micro-batches and ranks. So
    :meth:`loss` returns each term as a *mean over this micro-batch on this rank*, and
    :meth:`counts` says over how many items (labelled tokens, sequences, pairs, counting records)
    that mean was taken. The loop sums the counts over the step's micro-batches and all ranks
    before the first forward, and back-propagates
    ``term * local_count * world_size / global_count`` (``world_size`` undoes the gradient
    averaging of DDP and DeepSpeed; nothing is divided again by the accumulation count). A term
    whose global count is 0 contributes 0 but still runs its graph (ZeRO-3 needs every rank to).
    Terms that :meth:`counts` does not list are means over the whole micro-batch gathered across
    ranks (contrastive losses, whose negatives are the micro-batch): they weigh
    ``1 / gradient_accumulation_steps`` each. Objectives never divide by the accumulation count or
    the world size themselves.

    **Large contrastive batches (GradCache).** ``embedding_loss = True`` declares that :meth:`loss`
    reads the records only through what :meth:`encode` returns. With ``train.grad_cache_chunk_size``
    the loop then encodes a micro-batch in chunks of records without a graph, runs :meth:`loss` once
    on the whole micro-batch, and encodes each chunk again to back-propagate its share
    (:mod:`tunevl.train.grad_cache`). Such an objective needs no code of its own for it, only
    outputs that chunks can be put together from:

    * a tensor with ``m x n`` rows for ``n`` records holds ``m`` blocks of per-record rows, one block
      after the other, each in record order: ``image_embeds`` ``[n, D]`` (m = 1), NegCLIP's
      ``cat([images, hard_images])`` ``[2n, D]`` (m = 2). Several rows per record interleaved go in an
      ``[n, m, ...]`` tensor. Trailing dimensions must not depend on the records (pad to a fixed
      length), and a record without some field keeps its rows (mask it in :meth:`loss`).
    * a tensor whose rows are as many as the chunk's records produce (NegCLIP's hard captions, the
      rows of the records that carry a caption) is *ragged*: name it in :attr:`ragged_outputs`, and
      the chunks' rows are concatenated chunk after chunk. Declare it only when :meth:`loss` is the
      same for any order of those rows as long as rows that pair up keep their pairing: ragged
      outputs that pair row by row (NegCLIP's images and their captions) are concatenated alike, so
      they stay paired.
    * everything else is shared by the micro-batch: scalars (the logit scale and bias), tensors whose
      shape does not depend on the records (CoOp's class-prompt embeddings ``[C, D]``), plain values.
      Every chunk computes them again; :meth:`loss` sees the first chunk's, and their gradient flows
      back through the first chunk's encode.
    * encode computes everything trainable: :meth:`loss` calls no module (an encode output that is
      an ``nn.Module`` is an error).

    Objectives whose terms are all counted (next-token, DPO) keep ``embedding_loss = False``: under
    GradCache they run encode and loss chunk by chunk, which leaves their gradient unchanged.

    Args:
        weight: Multiplier of this objective's terms in the total loss (>= 0).
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    families: ClassVar[tuple[str, ...]] = ()
    embedding_loss: ClassVar[bool] = False
    #: Encode outputs whose rows vary with the records, concatenated chunk by chunk under GradCache.
    ragged_outputs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, weight: float = 1.0):
        super().__init__()
        if not weight >= 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        self.weight = float(weight)

    def setup(self, view, dataset) -> None:
        """Called once with the training dataset before the trainable parameters are collected (every rank).

        An objective may read dataset-level information here (class names) and add trainables
        (class-specific prompt contexts).
        """

    def prepare(self, view, dataset, *, dist, cfg, bf16: bool) -> None:
        """Called once on every rank after the model is on its device (and partitioned, under ZeRO-3),
        before the first batch is loaded (e.g. to fill a feature cache). Any forward it runs must be
        the same on every rank."""

    def batch_fields(self) -> frozenset[str]:
        """Record fields the view collates for this objective (default :attr:`requires`); an objective that
        serves some inputs itself (a feature cache, its own augmented pixels) leaves them out."""
        return self.requires

    def collate(self, view, records: list[dict]) -> dict[str, Any]:
        """This objective's own tensors for a micro-batch (runs in the data-loader workers)."""
        return {}

    def counts(self, batch: dict[str, Any]) -> dict[str, torch.Tensor | int]:
        """Items each term of :meth:`loss` averages over in this micro-batch, on this rank.

        Read from the collated batch (no forward): the loop needs the step's global counts
        before the first backward. Terms not listed are micro-batch means (see the class doc).
        """
        return {}

    def encode(self, view, batch: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def loss(self, **outputs: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, view, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.loss(**self.encode(view, batch))
