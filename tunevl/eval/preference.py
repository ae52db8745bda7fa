"""Image-grounded preference accuracy of a generative LVLM on held-out preference pairs.

On minimal visual contrast pairs (image ``I_w`` matching response ``y_w``, ``I_l`` matching ``y_l``)
the question is asked under each image: does the matching response get the higher summed log-prob,
``l(y_w|I_w) > l(y_l|I_w)`` and ``l(y_l|I_l) > l(y_w|I_l)``? A model that ignores the image gets one of
the two right per pair, so ``accuracy`` sits at 0.5 and ``accuracy/pairs`` (both right) near 0. On
pairs without a contrast image (TRL's format) it is the share where the chosen response scores higher.
"""

from __future__ import annotations

import torch

from tunevl.data.preference import dpo_conversations, normalise_preference, svco_conversations


def _logps(view, conversations: list[dict], chunk_size: int) -> torch.Tensor:
    batch = view.collate(conversations, {"messages"})
    batch = {k: (v.to(view.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    return view.sequence_logps(batch, chunk_size=chunk_size).float().cpu()


@torch.no_grad()
def preference_accuracy(view, records, *, batch_size: int = 8, chunk_size: int = 1024) -> dict[str, float]:
    """``accuracy`` (per image condition), ``accuracy/pairs`` and ``accuracy/<contrast_kind>`` on contrast pairs;
    ``accuracy`` (chosen above rejected) on plain pairs; ``n`` pairs.

    Every rank must call it under ZeRO-3 (all run the same forwards).
    """
    was_training = view.model.training
    view.model.eval()
    under_chosen, under_rejected, kinds = [], [], []
    try:
        for start in range(0, len(records), batch_size):
            chunk = [normalise_preference(records[i], f"record {i}") for i in range(start, min(start + batch_size, len(records)))]
            if chunk[0].get("contrast_images"):
                convs = [svco_conversations(r)[0] for r in chunk]
                names = ("chosen_with_chosen_image", "rejected_with_chosen_image", "rejected_with_rejected_image", "chosen_with_rejected_image")
                scores = _logps(view, [c[name] for name in names for c in convs], chunk_size).view(4, -1)
                under_chosen += (scores[0] > scores[1]).tolist()
                under_rejected += (scores[2] > scores[3]).tolist()
                kinds += [r.get("contrast_kind") for r in chunk]
            else:
                scores = _logps(view, [c for r in chunk for c in dpo_conversations(r)], chunk_size).view(-1, 2)
                under_chosen += (scores[:, 0] > scores[:, 1]).tolist()
    finally:
        view.model.train(was_training)
    n = len(under_chosen)
    if not under_rejected:
        return {"accuracy": sum(under_chosen) / max(n, 1), "n": n}
    out = {"accuracy": (sum(under_chosen) + sum(under_rejected)) / (2 * n),
           "accuracy/pairs": sum(a and b for a, b in zip(under_chosen, under_rejected)) / n, "n": n}
    for kind in sorted({k for k in kinds if k}):
        hits = [a + b for a, b, k in zip(under_chosen, under_rejected, kinds) if k == kind]
        out[f"accuracy/{kind}"] = sum(hits) / (2 * len(hits))
    return out
