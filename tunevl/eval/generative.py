"""Evaluation of generative LVLMs: answer accuracy by ranking candidate answers, or by greedy generation."""

from __future__ import annotations

import torch

from tunevl.eval.sharding import batched_calls, gather_objects, share


def with_answer(record: dict, answer: str) -> dict:
    """The record with ``answer`` as its assistant turn: replacing a final assistant turn, or after a final
    question (held-out questions need not carry their answer as a turn)."""
    messages = list(record["messages"])
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return {**record, "messages": messages}


@torch.no_grad()
def answer_accuracy(view, records, chunk_size: int = 1024) -> dict[str, float]:
    """Share of records whose ``answer`` has the highest summed log-prob among their ``candidates``.

    Records are conversations (ending with the question, or with the assistant's answer) carrying
    ``answer`` and ``candidates``; scores come from :func:`tunevl.losses.sequence_logps` through the view. Under
    several processes each rank scores its share of the records (see :mod:`tunevl.eval.sharding`).
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
            _check_question(records, call[0], r)
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


def _check_question(records, i: int, record: dict) -> None:
    from tunevl.errors import DataError

    where = records.location(i) if hasattr(records, "location") else f"record {i}"
    candidates, answer = record.get("candidates"), record.get("answer")
    if not isinstance(candidates, list) or not candidates or answer is None or not record.get("messages"):
        raise DataError(f"{where}: answer accuracy needs 'messages', 'answer' and a list of 'candidates' in each record "
                        "(for JSONL columns: data.eval.columns: {answer: answer, candidates: candidates})")
    if answer not in candidates:
        raise DataError(f"{where}: answer {answer!r} is not among the candidates {candidates}")


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
