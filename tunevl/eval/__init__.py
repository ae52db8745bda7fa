"""Evaluation: image-text retrieval and zero-shot classification for dual encoders, answer accuracy for LVLMs.

:func:`evaluate` picks what the data supports: retrieval when the records carry
``text`` or ``captions``, zero-shot classification when they carry ``label`` and the
dataset has ``classnames``. The training loop calls it at the start, every
``train.eval_steps`` steps and at the end; ``tunevl eval`` calls it on a bundle.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from tunevl.errors import DataError
from tunevl.eval.retrieval import caption_relevance, record_captions, retrieval_metrics
from tunevl.eval.sharding import batched_calls, gather_objects, gather_rows, shard_map, share
from tunevl.eval.zeroshot import class_embeddings, zeroshot_metrics


log = logging.getLogger("tunevl")


def _as_encoder(encoder, batch_size: int | None):
    if hasattr(encoder, "embed_images"):
        return encoder
    from tunevl.inference import DualEncoder  # a family view

    return DualEncoder(encoder, batch_size=batch_size or 64)


def _where(dataset, i: int) -> str:
    return dataset.location(i) if hasattr(dataset, "location") else f"record {i}"


@torch.no_grad()
def evaluate(encoder, dataset, eval_cfg=None, *, batch_size: int | None = None) -> dict[str, Any]:
    """Retrieval and/or zero-shot metrics of an encoder on a dataset.

    The model is put in eval mode for the duration and restored afterwards. Under several
    processes each rank embeds its share of the images and texts and every rank receives all
    of them, so every rank returns the same numbers as one process would; every rank runs the
    same number of forwards (ZeRO-3 needs all ranks in each).

    Args:
        encoder: A :class:`tunevl.inference.DualEncoder`, or a family view (wrapped in one).
        dataset: A map-style dataset (or list) of records with ``image``.
        eval_cfg: A :class:`tunevl.train.config.EvalConfig` (defaults when None).
        batch_size: Images per forward when ``encoder`` is a view.

    Returns:
        ``i2t_R@k``/``t2i_R@k``, ``num_images``, ``num_texts`` when retrieval runs;
        ``zeroshot_top{k}``, ``zeroshot_mean_per_class``, ``num_classes`` when zero-shot runs.

    Raises:
        DataError: The records support neither evaluation, or some records lack the
            fields the first record has.
    """
    from tunevl.train.config import EvalConfig

    cfg = eval_cfg if eval_cfg is not None else EvalConfig()
    if hasattr(encoder, "sequence_logps"):  # a generative view: answer accuracy on question records
        from tunevl.eval.generative import answer_accuracy

        return answer_accuracy(encoder, dataset)
    encoder = _as_encoder(encoder, batch_size)
    n = len(dataset) if cfg.max_samples is None else min(len(dataset), cfg.max_samples)
    if n == 0:
        raise DataError("nothing to evaluate: the evaluation dataset is empty")
    classnames = getattr(dataset, "classnames", None)
    first = dataset[0]
    want_retrieval = cfg.retrieval and record_captions(first) is not None
    want_zeroshot = cfg.zeroshot and bool(classnames) and first.get("label") is not None
    if not want_retrieval and not want_zeroshot:
        raise DataError(f"{_where(dataset, 0)}: nothing to evaluate: retrieval needs 'text' or 'captions' "
                        "and zero-shot needs 'label' with dataset classnames (or both are turned off in eval)")
    if want_retrieval and getattr(dataset, "mode", None) == "pairs":
        log.warning("evaluating on (image, caption) pairs, so each image is counted once per caption; "
                    "set mode: images on the evaluation source for the standard retrieval protocol")
    model = getattr(encoder, "model", None)
    was_training = getattr(model, "training", False)
    if model is not None:
        model.eval()
    try:
        # Each rank embeds its share of the records and of the texts; every rank gets every result.
        step = getattr(encoder, "batch_size", 64)
        indices, size = share(n)
        image_embeds, captions, labels, kept = [], [], [], 0
        for call in batched_calls(indices, size, step):
            records = [dataset[i] for i in call]
            real = [i in indices for i in call]
            for i, rec, keep in zip(call, records, real):
                if not keep:
                    continue
                if want_retrieval:
                    caps = record_captions(rec)
                    if not caps:
                        raise DataError(f"{_where(dataset, i)}: retrieval needs 'text' or 'captions', which this record lacks")
                    captions.append(caps)
                if want_zeroshot:
                    if rec.get("label") is None:
                        raise DataError(f"{_where(dataset, i)}: zero-shot needs 'label', which this record lacks")
                    labels.append(int(rec["label"]))
            embeds = encoder.embed_images([r["image"] for r in records])
            image_embeds.append(embeds[: sum(real)])
            kept += sum(real)
        images = gather_rows(torch.cat(image_embeds), kept, size, n)
        captions, labels = gather_objects(captions), gather_objects(labels)

        def embed_texts(texts):
            return shard_map(encoder.embed_texts, texts, step)

        out: dict[str, Any] = {}
        if want_retrieval:
            dedupe = cfg.dedupe_captions
            if dedupe is None:
                dedupe = first.get("captions") is None
            texts, relevant = caption_relevance(captions, dedupe=dedupe)
            out.update(retrieval_metrics(images, embed_texts(texts), relevant, cfg.ks))
            out["num_images"], out["num_texts"] = n, len(texts)
        if want_zeroshot:
            classes = class_embeddings(embed_texts, classnames, cfg.templates)
            out.update(zeroshot_metrics(images, classes, torch.tensor(labels), cfg.zeroshot_ks))
            out["num_classes"] = len(classnames)
            if not want_retrieval:
                out["num_images"] = n
        return out
    finally:
        if model is not None:
            model.train(was_training)


def format_table(metrics: dict[str, Any], title: str | None = None) -> str:
    """A readable two-column table of metrics (percentages with one decimal, counts as integers)."""
    rows = [(k, f"{v:.1f}" if isinstance(v, float) else str(v)) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not rows:
        return title or ""
    width = max(len(k) for k, _ in rows)
    lines = [title] if title else []
    lines += [f"{k:<{width}}  {v:>8}" for k, v in rows]
    return "\n".join(lines)


__all__ = ["evaluate", "format_table"]
