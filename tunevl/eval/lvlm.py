"""What a generative LVLM is evaluated on, chosen by what the evaluation records carry:

- ``chosen`` and ``rejected`` (preference pairs): image-grounded preference accuracy
  (:func:`tunevl.eval.preference.preference_accuracy`);
- ``answer`` "yes"/"no" without ``candidates`` (POPE probes): POPE accuracy, precision, recall,
  F1 and yes-ratio from generated answers (:func:`tunevl.eval.pope.pope_eval`);
- ``answer`` and ``candidates``: answer accuracy by ranking the candidates' log-probs
  (:func:`tunevl.eval.generative.answer_accuracy`).
"""

from __future__ import annotations

from typing import Any

from tunevl.errors import DataError


class _Head:
    """The first ``n`` records of a dataset."""

    def __init__(self, dataset, n: int):
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.dataset[i]


def evaluate_lvlm(view, dataset, cfg) -> dict[str, Any]:
    """Metrics of a generative view on ``dataset`` (see the module docstring); ``cfg.max_samples`` caps the records."""
    n = len(dataset) if cfg.max_samples is None else min(len(dataset), cfg.max_samples)
    if n == 0:
        raise DataError("nothing to evaluate: the evaluation dataset is empty")
    records = _Head(dataset, n)
    first = dataset[0]
    if first.get("chosen") is not None and first.get("rejected") is not None:
        from tunevl.eval.preference import preference_accuracy

        return preference_accuracy(view, records)
    if first.get("answer") in ("yes", "no") and first.get("candidates") is None:
        from tunevl.eval.pope import pope_eval

        return pope_eval(view, records)
    if first.get("answer") is None or first.get("candidates") is None:
        where = dataset.location(0) if hasattr(dataset, "location") else "record 0"
        missing = [k for k in ("answer", "candidates") if first.get(k) is None]
        raise DataError(f"{where}: nothing to evaluate: LVLM evaluation needs preference pairs (chosen, rejected), POPE "
                        f"questions (answer yes/no) or questions with 'answer' and 'candidates' (this record lacks "
                        f"{' and '.join(repr(k) for k in missing)})")
    from tunevl.eval.generative import answer_accuracy

    return answer_accuracy(view, records)
