"""Preference objectives for generative LVLMs: DPO and S-VCO, with the model itself as the reference.

Each objective collates its own sequences (DPO: chosen and rejected; S-VCO: six per pair) from
canonical preference records (:mod:`tunevl.data.preference`) through the view's conversation
collator, the same tokenisation as next-token training (labels on assistant tokens only). Summed
log-probs come from the chunked :func:`tunevl.losses.sequence_logps` (no ``[B, T, V]`` logits).
The reference pass runs the same model with LoRA and the soft prompt switched off
(:func:`tunevl.objectives.reference.reference_model`), or reads log-probs precomputed once
(``precompute_ref_log_probs``). Terms are means over pairs; :meth:`counts` gives the pair count,
so a step averages over its global number of pairs however they are split.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from tunevl.data.preference import SVCO_WITH_IMAGE, SVCO_WITHOUT_IMAGE, dpo_conversations, normalise_preference, svco_conversations
from tunevl.losses import dpo_loss, sequence_logps, svco_loss
from tunevl.losses.preference import SVCO_KEYS, svco_betas
from tunevl.models.registry import GENERATIVE
from tunevl.objectives.base import Objective
from tunevl.objectives.reference import drop_soft_prompt, reference_model


def _canonical(records: list[dict]) -> list[dict]:
    """Canonical preference records (records from a plain reader in TRL's format are normalised here)."""
    return [normalise_preference(r, f"record {r.get('index', i)}") for i, r in enumerate(records)]


class _PreferenceObjective(Objective):
    """What DPO and S-VCO share: sequence log-probs, the reference pass and its precomputed table."""

    families = GENERATIVE
    #: Term name, and the prefix of this objective's keys in the batch.
    name: ClassVar[str] = ""
    #: The reference log-probs one record needs, in table-column order.
    reference_columns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, weight: float = 1.0, chunk_size: int = 1024, precompute_ref_log_probs: bool = False):
        super().__init__(weight)
        self.chunk_size = chunk_size
        self.precompute_ref_log_probs = precompute_ref_log_probs
        #: ``[num_records, len(reference_columns)]`` precomputed reference log-probs (set before training).
        self.reference_table: torch.Tensor | None = None

    def _reference_rows(self, records: list[dict]) -> dict[str, torch.Tensor]:
        if self.reference_table is None:
            return {}
        index = [r.get("index") for r in records]
        if any(i is None or not 0 <= i < len(self.reference_table) for i in index):
            raise ValueError(f"{type(self).__name__}: precomputed reference log-probs need records with their dataset index")
        return {f"{self.name}_reference": self.reference_table[torch.tensor(index)]}

    def length_conversations(self, record: dict) -> list[dict]:
        """Conversations of one pair at least as long as every sequence this objective builds from it
        (pre-flight checks their lengths against ``model.max_length``)."""
        raise NotImplementedError

    def counts(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Pairs: the term is a mean over the step's pairs, however they are split over micro-batches and ranks."""
        return {self.name: batch[f"{self.name}_pairs"]}

    def logps(self, view, batch: dict[str, Any]) -> torch.Tensor:
        """Summed log-probs of each sequence's labelled (assistant) tokens, ``[rows]``."""
        return sequence_logps(view.last_hidden_state(batch), view.lm_head_module, batch["labels"], chunk_size=self.chunk_size)

    def reference_logps(self, view, batch: dict[str, Any]) -> torch.Tensor:
        """``[pairs, len(reference_columns)]`` log-probs under the reference (adapters and soft prompt off, no grad)."""
        raise NotImplementedError

    def _reference(self, view, batch: dict[str, Any]) -> torch.Tensor:
        stored = batch.get(f"{self.name}_reference")
        return stored if stored is not None else self.reference_logps(view, batch)


class DPO(_PreferenceObjective):
    """Direct Preference Optimization on image-conditioned pairs (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290).

    ``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`` on summed response log-probs, the
    sigmoid loss of trl's ``DPOTrainer``; the reference is the model with its adapters disabled, as
    trl does for peft models without ``ref_model``.

    Args:
        weight: Multiplier in the total loss.
        beta: Inverse temperature of the implicit reward (trl's default 0.1).
        chunk_size: Positions per lm-head call.
        precompute_ref_log_probs: Compute the reference log-probs once before training (cached
            next to the data, see ``tunevl data reference-logps``) instead of at every step.
    """

    requires = frozenset({"images", "chosen", "rejected"})
    name = "dpo"
    reference_columns = ("chosen", "rejected")

    def __init__(self, weight: float = 1.0, beta: float = 0.1, chunk_size: int = 1024, precompute_ref_log_probs: bool = False):
        super().__init__(weight, chunk_size, precompute_ref_log_probs)
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.beta = float(beta)

    def length_conversations(self, record):
        return dpo_conversations(normalise_preference(record, f"record {record.get('index', '?')}"))

    def collate(self, view, records: list[dict]) -> dict[str, Any]:
        """``dpo_sequences``: the chosen conversations, then the rejected ones (a batch without images gets
        the view's hidden blank image, so every rank runs the vision tower)."""
        records = _canonical(records)
        pairs = [dpo_conversations(r) for r in records]
        sequences = [p[0] for p in pairs] + [p[1] for p in pairs]
        return {"dpo_sequences": view.collate(sequences, {"messages"}), "dpo_pairs": len(records), **self._reference_rows(records)}

    def reference_logps(self, view, batch):
        sequences = batch["dpo_sequences"]
        with reference_model(view):
            logps = self.logps(view, drop_soft_prompt(view, sequences))
        return torch.stack(logps.chunk(2), dim=1)

    def encode(self, view, batch):
        chosen, rejected = self.logps(view, batch["dpo_sequences"]).chunk(2)
        reference = self._reference(view, batch)
        return {"chosen": chosen, "rejected": rejected, "ref_chosen": reference[:, 0], "ref_rejected": reference[:, 1]}

    def loss(self, chosen, rejected, ref_chosen, ref_rejected) -> dict[str, torch.Tensor]:
        return {"dpo": dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=self.beta)}


class SVCO(_PreferenceObjective):
    """Symmetrical Visual Contrastive Optimization (Wu et al. 2025, https://arxiv.org/abs/2502.13928).

    On minimal visual contrast pairs (MVC: image ``I_w`` matching response ``y_w``, image ``I_l``
    matching ``y_l``) the model learns to attend to the matching image and reject the contradicting
    one, with no image as the intermediate reference; see :func:`tunevl.losses.svco_loss`. Each pair
    gives six sequences: four with an image (one forward) and two without any image token (another).

    Args:
        weight: Multiplier in the total loss.
        beta: One number for the four terms, or four (attend-chosen, reject-chosen, attend-rejected,
            reject-rejected); 0 switches a term off. The official run uses 0.1 for each.
        chunk_size: Positions per lm-head call.
        precompute_ref_log_probs: Compute the reference log-probs once before training (cached).
    """

    requires = frozenset({"images", "contrast_images", "chosen", "rejected"})
    name = "svco"
    reference_columns = SVCO_KEYS

    def __init__(self, weight: float = 1.0, beta: float | list[float] = 0.1, chunk_size: int = 1024,
                 precompute_ref_log_probs: bool = False):
        super().__init__(weight, chunk_size, precompute_ref_log_probs)
        self.beta = svco_betas(beta)
        if not any(self.beta):
            raise ValueError("beta: at least one S-VCO term must be on (> 0)")

    def length_conversations(self, record):
        """Both responses under the chosen images, and under the contrast images too when their sizes differ
        (the no-image sequences are the same text without image tokens: never longer)."""
        from tunevl.data.images import image_size

        record = normalise_preference(record, f"record {record.get('index', '?')}")
        with_image, _ = svco_conversations(record)
        names = ["chosen_with_chosen_image", "rejected_with_chosen_image"]
        if [image_size(a) for a in record["images"]] != [image_size(b) for b in record["contrast_images"]]:
            names += ["chosen_with_rejected_image", "rejected_with_rejected_image"]
        return [with_image[n] for n in names]

    def collate(self, view, records: list[dict]) -> dict[str, Any]:
        """``svco_with_image``: the four image-conditioned sequences, grouped by kind ([kind, pair] order);
        ``svco_without_image``: the two with no image tokens."""
        records = _canonical(records)
        convs = [svco_conversations(r) for r in records]
        with_image = [c[0][name] for name, _, _ in SVCO_WITH_IMAGE for c in convs]
        without = [c[1][name] for name, _ in SVCO_WITHOUT_IMAGE for c in convs]
        return {
            "svco_with_image": view.collate(with_image, {"messages"}),
            "svco_without_image": view.collate(without, {"messages"}, hidden_image=False),
            "svco_pairs": len(records), **self._reference_rows(records),
        }

    def _six(self, view, batch, transform=lambda view, b: b) -> dict[str, torch.Tensor]:
        with_image = self.logps(view, transform(view, batch["svco_with_image"])).view(len(SVCO_WITH_IMAGE), -1)
        without = self.logps(view, transform(view, batch["svco_without_image"])).view(len(SVCO_WITHOUT_IMAGE), -1)
        names = [n for n, _, _ in SVCO_WITH_IMAGE] + [n for n, _ in SVCO_WITHOUT_IMAGE]
        return dict(zip(names, [*with_image, *without]))

    def reference_logps(self, view, batch):
        with reference_model(view):
            six = self._six(view, batch, drop_soft_prompt)
        return torch.stack([six[k] for k in SVCO_KEYS], dim=1)

    def encode(self, view, batch):
        reference = self._reference(view, batch)
        return {"policy": self._six(view, batch), "reference": {k: reference[:, j] for j, k in enumerate(SVCO_KEYS)}}

    def loss(self, policy, reference) -> dict[str, torch.Tensor]:
        return {"svco": svco_loss(policy, reference, beta=self.beta)}


__all__ = ["DPO", "SVCO"]
