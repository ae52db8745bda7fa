"""Evaluation of generative LVLMs: answer accuracy by ranking candidate answers, or by greedy generation."""

from __future__ import annotations

import torch

from tunevl.eval.sharding import batched_calls, gather_objects, share


def with_answer(record: dict, answer: str) -> dict:
    """The record with its last (assistant) turn replaced by ``answer``."""
    messages = [*record["messages"][:-1], {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    return {**record, "messages": messages}


@torch.no_grad()
def answer_accuracy(view, records, chunk_size: int = 1024) -> dict[str, float]:
    """Share of records whose ``answer`` has the highest summed log-prob among their ``candidates``.

    Records are conversations ending with the assistant's answer and carrying ``answer`` and
    ``candidates``; scores come from :func:`tunevl.losses.sequence_logps` through the view. Under several
    processes each rank scores its share of the records (see :mod:`tunevl.eval.sharding`).
    Returns ``{"accuracy": ..., "accuracy/<question_type>": ..., "n": ...}``.
    """
    was_training = view.model.training
    view.model.eval()
    device = view.device
    indices, size = share(len(records))
    local: list[tuple[str, bool]] = []
    try:
        for call in batched_calls(indices, size, 1):  # one record (its candidates) per forward, equal counts per rank
            r = records[call[0]]
            batch = view.collate([with_answer(r, c) for c in r["candidates"]], {"messages"})
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            scores = view.sequence_logps(batch, chunk_size=chunk_size)
            if call[0] in indices:
                best = r["candidates"][int(scores.argmax())]
                local.append((r.get("question_type", "all"), best == r["answer"]))
    finally:
        view.model.train(was_training)
    hits: dict[str, list[bool]] = {}
    for kind, hit in gather_objects(local):
        hits.setdefault(kind, []).append(hit)
    flat = [h for v in hits.values() for h in v]
    out = {"accuracy": sum(flat) / max(len(flat), 1), "n": len(flat)}
    out.update({f"accuracy/{k}": sum(v) / len(v) for k, v in hits.items()})
    return out


def generation_accuracy(generator, records, **generation_kwargs) -> float:
    """Share of records whose greedy answer (first word, lower-cased) equals ``answer``."""
    hits = 0
    for i in range(len(records)):
        r = records[i]
        question = next(c["text"] for c in r["messages"][0]["content"] if c.get("type") == "text")
        text = generator.generate(r.get("images") or [r["image"]], question, max_new_tokens=4, do_sample=False, **generation_kwargs)
        words = text.strip().lower().split()
        hits += bool(words) and words[0].strip(".") == r["answer"]
    return hits / max(len(records), 1)
