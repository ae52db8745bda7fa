"""The base of benchmark readers: a name, a size cap, image-path checks that name the file and record."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, ClassVar

from tunevl.errors import DataError


class Benchmark:
    """A benchmark read from its own released files; :meth:`evaluate` scores any encoder on it.

    Subclasses set ``key`` (the default metric prefix, the registry name) and implement
    :meth:`__len__` and :meth:`evaluate`, which returns metrics named without the prefix
    (percentages for accuracies; counts as ``num_*``; lists such as a confusion matrix are allowed).

    Args:
        name: Prefix of the metric names (default: the benchmark's registry name), e.g. to tell two
            splits apart.
        max_samples: Keep only the first N items (quicker evaluations during training).
    """

    key: ClassVar[str] = "benchmark"

    def __init__(self, name: str | None = None, max_samples: int | None = None):
        if max_samples is not None and max_samples < 1:
            raise DataError("must be >= 1, or null for every item", arg="max_samples")
        self.name = name or self.key
        self.max_samples = max_samples

    def _cap(self, items: list) -> list:
        return items if self.max_samples is None else items[: self.max_samples]

    def __len__(self) -> int:
        raise NotImplementedError

    def evaluate(self, encoder, batch_size: int | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} items)"


def absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def existing_file(path: str, arg: str = "path") -> str:
    full = absolute(path)
    if not os.path.isfile(full):
        raise DataError(f"no such file: {full}", arg=arg)
    return full


def existing_folder(path: str, arg: str = "image_root") -> str:
    full = absolute(path)
    if not os.path.isdir(full):
        raise DataError(f"no such folder: {full}", arg=arg)
    return full


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except ValueError as err:
            raise DataError(f"{path}: invalid JSON: {err}") from None


def check_images(paths: Sequence[str], where: Sequence[str], file: str) -> None:
    """Every image file exists (one ``stat`` each); else one line naming how many are missing and the first."""
    missing = [k for k, p in enumerate(paths) if not os.path.isfile(p)]
    if missing:
        k = missing[0]
        raise DataError(f"{file}: {len(missing)} of {len(paths)} images not found; the first: {where[k]}: {paths[k]} "
                        "(set image_root to the folder that holds them)")


def need(item: dict, keys: Sequence[str], where: str) -> None:
    """Every key is present in a benchmark record; else one line naming the record and the key."""
    for key in keys:
        if key not in item:
            raise DataError(f"{where}: missing key {key!r} (keys: {', '.join(map(str, item)) or 'none'})")
