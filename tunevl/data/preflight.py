"""Pre-flight checks: find bad data before the first training step, not hours into a run.

:func:`preflight` checks, in this order, and raises a one-line :class:`~tunevl.errors.DataError`
naming the file, the line or record, and the key:

1. the dataset is not empty (and, for training, holds at least one optimizer step's global batch);
2. every record carries the fields the objectives require (``Objective.requires``);
3. records: text fields hold strings and conversations are trainable (a list of turns with
   roles chat templates know, an assistant turn to learn from, image placeholders that match
   the record's images; see :mod:`tunevl.data.conversations`). Every record of a file read into
   memory (JSONL, CSV) is checked, a sample of the others;
4. images: **every** image stored as a file must exist (one ``stat`` each, cheap even for
   millions of records), and a deterministic, evenly spaced **sample** of records
   (``verify_sample``, default 64; every record with ``full=True``, ``tunevl data check --full``)
   is fully decoded. Decoding every image up front would take longer than many runs, so an
   image that is present but corrupt and outside the sample is caught when a batch first loads
   it: the collate raises a ``DataError`` with its file and record (see
   :class:`~tunevl.data.images.ImageRef`) instead of a PIL traceback. The images checked are
   those the objectives use: their required image fields, and a conversation's ``image`` /
   ``images`` (which the model sees with the conversation).

A source's ``max_bad_images: N`` (e.g. ``data.train.max_bad_images: 10``) lets up to N
records with missing or unreadable images be dropped with a warning instead; the rest
is returned as a :class:`FilteredDataset`. Records are never dropped mid-run: every rank
must see batches of the same shape.

Unknown recipe keys, wrong value types and objective/model-family mismatches are found
earlier, by ``Recipe.validate()``.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any, Sequence

from tunevl.data.conversations import check_record
from tunevl.data.images import load_image
from tunevl.data.sources.base import IMAGE_FIELDS, IMAGE_LIST_FIELDS
from tunevl.errors import DataError

log = logging.getLogger("tunevl")

#: Records whose images are fully decoded before training.
VERIFY_SAMPLE = 64


class FilteredDataset:
    """A view of ``dataset`` without some records; ``index`` counts positions in the view.

    Other attributes (``classnames``, ``file``...) are the underlying dataset's.

    Args:
        dataset: A map-style dataset.
        keep: The underlying positions the view keeps, in order.
    """

    def __init__(self, dataset, keep: Sequence[int]):
        self.dataset = dataset
        self.keep = list(keep)

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, j: int) -> dict[str, Any]:
        if j < 0:
            j += len(self.keep)
        if not 0 <= j < len(self.keep):
            raise IndexError(f"record {j} out of range for {len(self.keep)} records")
        rec = self.dataset[self.keep[j]]
        rec["index"] = j
        return rec

    def location(self, j: int) -> str:
        return _where(self.dataset, self.keep[j])

    # The source methods pre-flight uses, mapped to positions in the view (absent when the dataset lacks them).
    @property
    def record_fields(self):
        inner = self.dataset.record_fields
        return lambda j: inner(self.keep[j])

    @property
    def image_files(self):
        inner = self.dataset.image_files

        def image_files():
            position = {u: j for j, u in enumerate(self.keep)}
            for i, *rest in inner():
                if i in position:
                    yield (position[i], *rest)
        return image_files

    @property
    def first_missing(self):
        inner = self.dataset.first_missing
        fields = getattr(self.dataset, "record_fields", None) or self.dataset.__getitem__

        def first_missing(field: str) -> int | None:
            if inner(field) is None:
                return None
            return next((j for j, u in enumerate(self.keep) if fields(u).get(field) is None), None)
        return first_missing

    def __getattr__(self, name: str):
        if name == "dataset":  # not yet set (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


#: Image fields a required record field brings along: a conversation's images go through the model with it.
IMAGES_OF = {"messages": ("image", "images")}


def preflight(dataset, objectives: Sequence = (), *, split: str = "train", max_bad_images: int | None = None,
              verify_sample: int = VERIFY_SAMPLE, full: bool = False, view=None):
    """Check ``dataset`` before training or evaluating on it.

    Args:
        dataset: A map-style dataset of records (a source, a synthetic set, any ``__getitem__``).
        objectives: The objectives that will train on it; their ``requires`` fields are
            checked. With none (evaluation), every image field is checked.
        split: ``train`` or ``eval``: names the recipe node (``data.train``) in messages.
        max_bad_images: Records with missing or unreadable images that may be dropped;
            None takes the dataset's own ``max_bad_images`` (0 when it has none).
        verify_sample: How many evenly spaced records get their images decoded.
        full: Decode every image (``tunevl data check --full``).
        view: The model's family view, when it is loaded: conversations are then also checked for
            its image placeholder written as text (LLaVA's ``<image>``).

    Returns:
        ``dataset``, or a :class:`FilteredDataset` without the bad records.

    Raises:
        DataError: One line naming the file, line/record and key of the first problem.
    """
    key = f"data.{split}"
    file = getattr(dataset, "file", None)
    head = f"{file}: {key}" if file else key
    n = len(dataset)
    if n == 0:
        raise DataError(f"{head}: the dataset is empty")
    required: set[str] = set()
    for k, objective in enumerate(objectives):
        required |= set(objective.requires) | set(getattr(objective, "image_fields", ()))  # optional images it reads
        for field in sorted(objective.requires):
            _check_field(dataset, field, f"objectives.{k} ({type(objective).__name__})", key, head)
    used = required | {f for field in required for f in IMAGES_OF.get(field, ())}
    image_fields = [f for f in IMAGE_FIELDS + IMAGE_LIST_FIELDS if not objectives or f in used]
    image_token = getattr(getattr(view, "processor", None), "image_token", None)
    _check_records(dataset, need_answer="messages" in required, image_token=image_token, sample=verify_sample)
    limit = max_bad_images if max_bad_images is not None else getattr(dataset, "max_bad_images", 0)
    bad = _bad_images(dataset, image_fields, n if full else verify_sample)
    if len(bad) > limit:
        first = bad[min(bad)]
        if len(bad) == 1:
            raise DataError(f"{first} (to drop up to N such records instead, set {key}.max_bad_images: N)")
        raise DataError(f"{len(bad)} records with missing or unreadable images, more than {key}.max_bad_images="
                        f"{limit}; the first: {first}")
    if bad:
        log.warning("%s: dropping %d record(s) with missing or unreadable images (max_bad_images=%d); the first: %s",
                    key, len(bad), limit, bad[min(bad)])
        dataset = FilteredDataset(dataset, [i for i in range(n) if i not in bad])
    images = "no images" if not image_fields else ("every image decoded" if full else "image files found, a sample decoded")
    log.info("%s: %d records checked (%s)", key, len(dataset), images)
    return dataset


def _sample(n: int, m: int) -> list[int]:
    """``m`` evenly spaced positions of ``n`` (all when ``m >= n``)."""
    m = min(n, max(m, 0))
    return sorted({round(k * (n - 1) / (m - 1)) for k in range(m)}) if m > 1 else list(range(m))


def _check_records(dataset, *, need_answer: bool, image_token: str | None, sample: int) -> None:
    """Text fields and conversations of every in-memory record (a sample of the others); see the module doc."""
    fields = getattr(dataset, "record_fields", None)
    n = len(dataset)
    indices = range(n) if getattr(dataset, "records_in_memory", False) else _sample(n, sample)
    column = getattr(dataset, "column", None)
    for i in indices:
        record = fields(i) if fields is not None else dataset[i]
        check_record(record, _where(dataset, i), column, need_answer=need_answer, image_token=image_token)


def held_out_split(n: int, share: float | int, seed: int) -> tuple[list[int], list[int]]:
    """``(train, held out)`` positions of ``n`` records: ``share`` of them (a float) or that many (an int)
    held out, chosen by ``seed``; both lists in dataset order."""
    k = round(share * n) if isinstance(share, float) else int(share)
    k = min(max(k, 1), n - 1)
    if n < 2:
        raise DataError(f"eval_split: {n} record(s) cannot be split into training and held-out records", arg="eval_split")
    held = set(random.Random(f"tunevl.eval_split/{seed}").sample(range(n), k))
    return [i for i in range(n) if i not in held], sorted(held)


def check_global_batch(dataset, train_cfg, world_size: int, key: str = "data.train") -> None:
    """A training set must fill at least one optimizer step: ``per_device x processes x accumulation`` records."""
    per_device, accum = train_cfg.per_device_train_batch_size, train_cfg.gradient_accumulation_steps
    needed = per_device * world_size * accum
    if len(dataset) < needed:
        file = getattr(dataset, "file", None)
        head = f"{file}: {key}" if file else key
        raise DataError(f"{head}: {len(dataset)} records cannot fill one optimizer step of {needed} "
                        f"({per_device} per device x {world_size} process(es) x {accum} accumulation); lower "
                        "train.per_device_train_batch_size or train.gradient_accumulation_steps, or add data")


def _where(dataset, i: int) -> str:
    if hasattr(dataset, "location"):
        return dataset.location(i)
    return f"record {i}"


def _check_field(dataset, field: str, objective: str, key: str, head: str) -> None:
    if hasattr(dataset, "first_missing"):
        i = dataset.first_missing(field)
        if i is None:
            return
        columns = getattr(dataset, "columns", None)
        if columns is not None and field not in columns:
            have = ", ".join(sorted(columns)) or "none"
            raise DataError(f"{head}: {objective} needs the record field '{field}', which this data does not have "
                            f"(fields: {have}); map a column to it with {key}.columns.{field}")
        column = dataset.column(field) if hasattr(dataset, "column") else field
        raise DataError(f"{_where(dataset, i)}: {column}: {objective} needs the record field '{field}', "
                        "which this record lacks")
    record = dataset[0]
    if record.get(field) is None:
        have = ", ".join(sorted(k for k, v in record.items() if v is not None and k != "index"))
        raise DataError(f"{head}: {objective} needs the record field '{field}', which the records lack (fields: {have})")


def _bad_images(dataset, fields: list[str], verify_sample: int) -> dict[int, str]:
    """Record index → message, for records with a missing image file or an image that fails to decode."""
    bad: dict[int, str] = {}
    if not fields:
        return bad
    if hasattr(dataset, "image_files"):
        for i, field, column, path in dataset.image_files():
            if field in fields and i not in bad and not os.path.isfile(path):
                bad[i] = f"{_where(dataset, i)}: {column}: image not found: {path}"
    for i in _sample(len(dataset), verify_sample):
        if i in bad:
            continue
        record = dataset[i]
        for field in fields:
            value = record.get(field)
            values = value if field in IMAGE_LIST_FIELDS and isinstance(value, (list, tuple)) else [value]
            try:
                for v in values:
                    if v is not None:
                        load_image(v)
            except DataError as err:
                bad[i] = str(err)
                break
    return bad


def build_dataset(recipe, split: str, objectives: Sequence = (), *, view=None, full: bool = False):
    """Build ``data.<split>`` of a recipe and run :func:`preflight` on it; None when the recipe has no such node.

    A source with ``eval_split`` holds out part of its records: ``data.train`` is the rest, and
    without a ``data.eval`` node the evaluation set is the held-out part. A training set must
    fill one optimizer step (:func:`check_global_batch`, with the launcher's ``WORLD_SIZE``).

    Errors in the node's arguments (a missing file, a column mapping naming no column)
    are located in the recipe, e.g. ``recipe.yaml:14: data.train.columns.text: no column 'caption' in ...``.
    """
    data = recipe.tree.get("data") or {}
    node_split, held_out = split, False
    if split == "eval" and data.get("eval") is None and (data.get("train") or {}).get("eval_split") is not None:
        node_split, held_out = "train", True
    dataset = _build_node(recipe, node_split)
    if dataset is None:
        return None
    share = getattr(dataset, "eval_split", None)
    if share is not None:
        train, evaluation = held_out_split(len(dataset), share, getattr(dataset, "eval_split_seed", 0))
        dataset = FilteredDataset(dataset, evaluation if held_out else train)
    dataset = preflight(dataset, objectives, split=split, view=view, full=full)
    if split == "train":
        check_global_batch(dataset, recipe.train_config(), int(os.environ.get("WORLD_SIZE", "1")))
    return dataset


def _build_node(recipe, split: str):
    from tunevl.config.errors import locate

    try:
        return recipe.build_dataset(split)
    except DataError as err:
        if not err.arg:
            raise
        path = ("data", split, *(int(p) if p.isdigit() else p for p in err.arg.split(".")))
        origin = locate(recipe.positions, path)
        where = ""
        if origin is not None and origin.override is not None:
            where = f"override '{origin.override}': "
        elif origin is not None and origin.file is not None:
            where = f"{origin.file}:{origin.line}: " if origin.line is not None else f"{origin.file}: "
        elif recipe.file:
            where = f"{recipe.file}: "
        raise DataError(f"{where}data.{split}.{err.arg}: {err.detail}") from None


def check_lengths(view, dataset, objectives: Sequence = ()) -> None:
    """Pre-flight of a generative view: truncation to ``model.max_length`` must not cut into image tokens
    or leave no answer, in the records' ``messages`` and in the sequences an objective builds from a
    record (preference objectives: ``length_conversations(record)``)."""
    own = [o for o in objectives if hasattr(o, "length_conversations")]
    if not own or any("messages" in o.requires for o in objectives):
        view.check_lengths(dataset)
    for objective in own:
        view.check_lengths([{**c, "index": i} for i in range(len(dataset)) for c in objective.length_conversations(dataset[i])])
