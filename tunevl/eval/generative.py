"""Evaluation of generative LVLMs: answer accuracy by ranking candidate answers, or by greedy generation."""

from __future__ import annotations

import torch


def with_answer(record: dict, answer: str) -> dict:
    """The record with its last (assistant) turn replaced by ``answer``."""
    messages = [*record["messages"][:-1], {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    return {**record, "messages": messages}


@torch.no_grad()
def answer_accuracy(view, records, chunk_size: int = 1024) -> dict[str, float]:
    """Share of records whose ``answer`` has the highest summed log-prob among their ``candidates``.

    Records are conversations ending with the assistant's answer and carrying ``answer`` and
    ``candidates``; scores come from :func:`tunevl.losses.sequence_logps` through the view.
    Returns ``{"accuracy": ..., "accuracy/<question_type>": ..., "n": ...}``.
    """
    was_training = view.model.training
    view.model.eval()
    device = view.device
    hits: dict[str, list[bool]] = {}
    try:
        for i in range(len(records)):
            r = records[i]
            batch = view.collate([with_answer(r, c) for c in r["candidates"]], {"messages"})
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            scores = view.sequence_logps(batch, chunk_size=chunk_size)
            best = r["candidates"][int(scores.argmax())]
            hits.setdefault(r.get("question_type", "all"), []).append(best == r["answer"])
    finally:
        view.model.train(was_training)
    flat = [h for v in hits.values() for h in v]
    out = {"accuracy": sum(flat) / max(len(flat), 1), "n": len(flat)}
    out.update({f"accuracy/{k}": sum(v) / len(v) for k, v in hits.items()})
    return out


def generation_accuracy(generator, records, **generation_kwargs) -> float:
    """Share of records whose greedy answer (first word, lower-cased) equals ``answer``.

    Each record's conversation up to its answer is the prompt, as the record has it: string or item
    contents, a leading system message, with or without images.
    """
    from tunevl.models.chat import record_images

    hits = 0
    for i in range(len(records)):
        r = records[i]
        messages = r["messages"][:-1] if r["messages"][-1]["role"] == "assistant" else r["messages"]
        kwargs = {"max_new_tokens": 4, "do_sample": False, **generation_kwargs}
        text = generator.chat({"messages": messages, "images": record_images(r)}, **kwargs)
        words = text.strip().lower().split()
        hits += bool(words) and words[0].strip(".") == r["answer"]
    return hits / max(len(records), 1)
