"""POPE (Li et al. 2023, https://arxiv.org/abs/2305.10355): yes/no object-presence probes of an LVLM.

The model answers each question by greedy generation; answers are parsed and scored exactly as the
official ``evaluate.py`` does (FORMATS.md §5): keep the text before the first ``.``, delete ``,``,
split on spaces; the answer is "no" when a word is ``No``, ``not`` or ``no``, else "yes" (so "NO" and
"None" read as yes). "yes" is the positive class.
"""

from __future__ import annotations

import torch


def parse_pope_answer(text: str) -> str:
    """The official POPE reading of a free-form answer: ``"yes"`` or ``"no"``."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if any(w in ("No", "not", "no") for w in words) else "yes"


def pope_metrics(labels: list[str], answers: list[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio of parsed ``answers`` against ``labels`` (yes = positive).

    ``answers`` are raw model outputs, parsed with :func:`parse_pope_answer`; a label other than
    "no" counts as yes, as in the official script. Where the official script would divide by zero
    (no yes predicted or no yes label), the ratio is 0.
    """
    if len(labels) != len(answers):
        raise ValueError(f"{len(labels)} labels but {len(answers)} answers")
    pred = [parse_pope_answer(a) != "no" for a in answers]
    gold = [label != "no" for label in labels]
    tp = sum(p and g for p, g in zip(pred, gold))
    fp = sum(p and not g for p, g in zip(pred, gold))
    tn = sum(not p and not g for p, g in zip(pred, gold))
    fn = sum(not p and g for p, g in zip(pred, gold))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    n = len(labels)
    return {
        "accuracy": (tp + tn) / n if n else 0.0, "precision": precision, "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": sum(pred) / n if n else 0.0, "n": n, "TP": tp, "FP": fp, "TN": tn, "FN": fn,
    }


@torch.no_grad()
def pope_eval(view, records, max_new_tokens: int = 16) -> dict[str, float]:
    """Generate an answer to every ``{"image", "text", "answer"}`` record greedily and score them.

    Every rank must call it under ZeRO-3 (generation then keeps the ranks in step).
    """
    import torch.distributed as dist

    from tunevl.inference import for_view

    generator = for_view(view)
    synced = dist.is_initialized() and dist.get_world_size() > 1
    answers, labels = [], []
    for i in range(len(records)):
        r = records[i]
        images = r.get("images") or [r["image"]]
        answers.append(generator.generate(images, r["text"], max_new_tokens=max_new_tokens, do_sample=False,
                                          **({"synced_gpus": True} if synced else {})))
        labels.append(r["answer"])
    return pope_metrics(labels, answers)
