"""Pre-flight checks: find bad data before the first training step, not hours into a run.

:func:`preflight` checks, in this order, and raises a one-line :class:`~tunevl.errors.DataError`
naming the file, the line or record, and the key:

1. the dataset is not empty;
2. every record carries the fields the objectives require (``Objective.requires``);
3. images: **every** image stored as a file must exist (one ``stat`` each, cheap even for
   millions of records), and a deterministic, evenly spaced **sample** of records
   (``verify_sample``, default 64) is fully decoded. Decoding every image up front would
   take longer than many runs, so an image that is present but corrupt and outside the
   sample is caught when a batch first loads it: the collate raises a ``DataError`` with
   its file and record (see :class:`~tunevl.data.images.ImageRef`) instead of a PIL traceback.

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
from typing import Any, Sequence

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

    def __getattr__(self, name: str):
        if name == "dataset":  # not yet set (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def preflight(dataset, objectives: Sequence = (), *, split: str = "train", max_bad_images: int | None = None,
              verify_sample: int = VERIFY_SAMPLE):
    """Check ``dataset`` before training or evaluating on it.

    Args:
        dataset: A map-style dataset of records (a source, a synthetic set, any ``__getitem__``).
        objectives: The objectives that will train on it; their ``requires`` fields are
            checked. With none (evaluation), every image field is checked.
        split: ``train`` or ``eval``: names the recipe node (``data.train``) in messages.
        max_bad_images: Records with missing or unreadable images that may be dropped;
            None takes the dataset's own ``max_bad_images`` (0 when it has none).
        verify_sample: How many evenly spaced records get their images decoded.

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
    image_fields = [f for f in IMAGE_FIELDS + IMAGE_LIST_FIELDS if not objectives or f in required]
    limit = max_bad_images if max_bad_images is not None else getattr(dataset, "max_bad_images", 0)
    bad = _bad_images(dataset, image_fields, verify_sample)
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
    log.info("%s: %d records checked (%s)", key, len(dataset), "image files found, a sample decoded" if image_fields else "no images")
    return dataset


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
    n = len(dataset)
    m = min(n, max(verify_sample, 0))
    sample = sorted({round(k * (n - 1) / (m - 1)) for k in range(m)}) if m > 1 else list(range(m))
    for i in sample:
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


def build_dataset(recipe, split: str, objectives: Sequence = ()):
    """Build ``data.<split>`` of a recipe and run :func:`preflight` on it; None when the recipe has no such node.

    Errors in the node's arguments (a missing file, a column mapping naming no column)
    are located in the recipe, e.g. ``recipe.yaml:14: data.train.columns.text: no column 'caption' in ...``.
    """
    from tunevl.config.errors import locate

    try:
        dataset = recipe.build_dataset(split)
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
    if dataset is None:
        return None
    return preflight(dataset, objectives, split=split)
