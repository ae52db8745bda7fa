"""The record schema and the base of file-backed sources: column mappings, image paths, locations.

A source is a map-style dataset: ``len(source)`` and ``source[i] -> record dict`` with
``index == i``. Images stay undecoded in records (as :class:`~tunevl.data.images.ImageRef`)
until a collate or an evaluator needs the pixels. Every record has a location (data file,
line or record number, column) that errors quote.

Paths: relative image paths resolve against ``image_root`` when given, otherwise against
the folder of the data file, never against the current directory (which is what
``datasets`` would do; see PITFALLS.md).
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

from PIL import Image

from tunevl.config.errors import did_you_mean
from tunevl.data.conversations import from_sharegpt, is_sharegpt
from tunevl.data.images import ImageRef
from tunevl.errors import DataError

#: Every record field (DESIGN.md "Records"); ``captions`` holds all captions of an image for retrieval.
RECORD_FIELDS: tuple[str, ...] = (
    "image", "images", "text", "long_text", "captions", "messages", "system_prompt", "negatives",
    "negative_image", "count", "label", "prompt", "chosen", "rejected", "contrast_image", "contrast_images",
    "contrast_text", "index",
    # counting: a fixed counterfactual caption (else made on the fly); NegCLIP: the caption of
    # `negative_image` and that caption's own hard negatives
    "counterfactual", "negative_image_text", "negative_image_negatives",
)
IMAGE_FIELDS: tuple[str, ...] = ("image", "negative_image", "contrast_image")
IMAGE_LIST_FIELDS: tuple[str, ...] = ("images", "contrast_images")
# Fields holding lists; in a CSV cell they are JSON or Python literals (NegCLIP writes the latter).
LIST_FIELDS: tuple[str, ...] = ("images", "contrast_images", "captions", "negatives", "messages", "negative_image_negatives")


class Source:
    """Base class of the file-backed sources.

    Subclasses call ``__init__`` (which checks the paths), set the field → column mapping
    ``columns`` and implement ``__len__``, :meth:`_record` (fields with raw image values)
    and :meth:`_line` or :meth:`location`; sources with columnar storage also override
    :meth:`first_missing` and :meth:`image_files` to avoid building every record.

    Attributes:
        file: The data file (or folder), absolute.
        image_root: Folder that relative image paths resolve against.
        classnames: Class names indexed by ``label``, or None.
        max_bad_images: Records with unreadable images that pre-flight may drop (with a
            warning) instead of stopping; see :func:`tunevl.data.preflight.preflight`.
        eval_split: Hold out this share (a float in (0, 1)) or number (an int) of the records
            for evaluation; :func:`tunevl.data.preflight.build_dataset` trains on the rest and,
            when the recipe has no ``data.eval``, evaluates on them. None holds out nothing.
        eval_split_seed: Seed of the held-out choice (the same seed holds out the same records).
    """

    classnames: list[str] | None = None
    columns: dict[str, str]
    eval_split: float | int | None = None
    eval_split_seed: int = 0

    def __init__(self, file: str, image_root: str | None, max_bad_images: int = 0, *, default_root: str | None = None,
                 eval_split: float | int | None = None, eval_split_seed: int = 0):
        self.file = _absolute(file)
        if not os.path.exists(self.file):
            raise DataError(f"no such file or folder: {self.file}", arg="path")
        if image_root is not None:
            self.image_root = _absolute(image_root)
            if not os.path.isdir(self.image_root):
                raise DataError(f"no such folder: {self.image_root}", arg="image_root")
        else:
            self.image_root = default_root or os.path.dirname(self.file)
        if max_bad_images < 0:
            raise DataError(f"must be >= 0, got {max_bad_images}", arg="max_bad_images")
        if eval_split is not None and not (0 < eval_split < 1 if isinstance(eval_split, float) else eval_split >= 1):
            raise DataError(f"a share in (0, 1) or a number of records >= 1, got {eval_split!r}", arg="eval_split")
        self.max_bad_images = max_bad_images
        self.eval_split, self.eval_split_seed = eval_split, eval_split_seed
        self.columns = {}
        self._fields: frozenset[str] | None = None

    # ---- to implement ----------------------------------------------------------------
    def __len__(self) -> int:
        raise NotImplementedError

    def _record(self, i: int) -> dict[str, Any]:
        """Record ``i`` without ``index``; image fields hold paths, bytes or image dicts."""
        raise NotImplementedError

    def _line(self, i: int) -> int | None:
        """1-based line of record ``i`` in :attr:`file`, when the format has lines."""
        return None

    # ---- records -----------------------------------------------------------------------
    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record {i} out of range for {n} records")
        rec = self.record_fields(i)
        self._wrap_images(rec, i)
        rec["index"] = i
        return rec

    def record_fields(self, i: int) -> dict[str, Any]:
        """Record ``i`` as read (images not yet wrapped, no ``index``), conversations in the chat format."""
        rec = self._record(i)
        if is_sharegpt(rec.get("messages")):
            rec["messages"] = from_sharegpt(rec["messages"], f"{self.location(i)}: {self.column('messages')}")
        return rec

    def location(self, i: int) -> str:
        """Where record ``i`` is: ``file:line: record i`` (or ``file: record i``)."""
        line = self._line(i)
        return f"{self.file}:{line}: record {i}" if line is not None else f"{self.file}: record {i}"

    def column(self, field: str) -> str:
        """The data's name for ``field`` (what the user sees in the file)."""
        return self.columns.get(field, field)

    @property
    def fields(self) -> frozenset[str]:
        """The fields every record carries (besides ``index``)."""
        if self._fields is None:
            self._fields = frozenset(f for f in self.columns if self.first_missing(f) is None)
        return self._fields

    def first_missing(self, field: str) -> int | None:
        """The first record without ``field`` (absent or null), or None when all have it."""
        for i in range(len(self)):
            if self._record(i).get(field) is None:
                return i
        return None

    def image_files(self) -> Iterator[tuple[int, str, str, str]]:
        """``(record, field, key, absolute path)`` of every image stored as a file (for pre-flight).

        Decodes nothing; embedded image bytes are left out. ``key`` is the column, with a
        list position for ``images`` (``"images[1]"``).
        """
        for i in range(len(self)):
            rec = self._record(i)
            for field in IMAGE_FIELDS + IMAGE_LIST_FIELDS:
                value = rec.get(field)
                if value is None:
                    continue
                if field in IMAGE_LIST_FIELDS:
                    items = value if isinstance(value, (list, tuple)) else [value]
                    keyed = [(f"{self.column(field)}[{k}]", v) for k, v in enumerate(items)]
                else:
                    keyed = [(self.column(field), value)]
                for key, item in keyed:
                    path = _file_path(item)
                    if path is not None:
                        yield i, field, key, self.resolve(path)

    # ---- helpers -----------------------------------------------------------------------
    def _wrap_images(self, rec: dict, i: int) -> None:
        where = None
        for field in IMAGE_FIELDS + IMAGE_LIST_FIELDS:
            value = rec.get(field)
            if value is None:
                continue
            where = where or self.location(i)
            origin = f"{where}: {self.column(field)}"
            if field in IMAGE_LIST_FIELDS:
                if not isinstance(value, (list, tuple)):
                    value = [value]
                rec[field] = [self.image_ref(v, f"{origin}[{k}]") for k, v in enumerate(value)]
            else:
                rec[field] = self.image_ref(value, origin)

    def image_ref(self, value: Any, origin: str) -> ImageRef | Image.Image:
        """An :class:`ImageRef` for a path, bytes or ``{"bytes", "path"}`` value (PIL images pass through)."""
        if isinstance(value, (ImageRef, Image.Image)):
            return value
        if isinstance(value, dict):
            data, path = value.get("bytes"), value.get("path")
            if data is not None:
                return ImageRef(path=path, data=data, origin=origin)
            value = path
        if isinstance(value, (bytes, bytearray)):
            return ImageRef(data=bytes(value), origin=origin)
        if isinstance(value, (str, os.PathLike)) and str(value):
            return ImageRef(path=self.resolve(os.fspath(value)), origin=origin)
        raise DataError(f"{origin}: expected an image path or image bytes, got {_describe(value)}")

    def resolve(self, path: str) -> str:
        """An image path from the data, made absolute against :attr:`image_root`."""
        path = os.path.expanduser(path)
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(self.image_root, path))

    def __repr__(self) -> str:
        try:
            size = f", {len(self)} records"
        except AttributeError:  # not fully built
            size = ""
        return f"{type(self).__name__}({getattr(self, 'file', '?')!r}{size})"


def _file_path(value: Any) -> str | None:
    """The file path of an image value that is stored as a file, else None."""
    if isinstance(value, dict):
        return value.get("path") if value.get("bytes") is None else None
    if isinstance(value, ImageRef):
        return value.path if value.data is None else None
    if isinstance(value, (str, os.PathLike)) and str(value):
        return os.fspath(value)
    return None


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:37] + '...' if len(text) > 40 else text}"


def map_columns(available: Sequence[str], columns: dict[str, str | None] | None, file: str) -> dict[str, str]:
    """The field → column mapping: columns named like a record field map to it, ``columns`` adds or overrides.

    ``columns: {text: caption}`` reads ``text`` from the column ``caption``; ``columns: {label: null}``
    drops a field. Columns that are not record fields (:data:`RECORD_FIELDS`) are left out
    unless mapped (``columns: {answer: answer}``). A mapping naming a column the data lacks
    is an error (except in data without any column, which pre-flight reports as empty).
    """
    mapping = {c: c for c in available if c in RECORD_FIELDS and c != "index"}
    if "messages" not in mapping and "conversations" in available:
        mapping["messages"] = "conversations"  # LLaVA's ShareGPT layout (converted when read)
    for field, column in (columns or {}).items():
        if field == "index":
            raise DataError("index is the record's position, set by tunevl; it cannot be mapped", arg="columns.index")
        if column is None:
            mapping.pop(field, None)
            continue
        if available and column not in available:  # (no columns at all: an empty file, which pre-flight reports)
            shown = ", ".join(map(str, available[:20])) + (", ..." if len(available) > 20 else "")
            raise DataError(f"no column {column!r} in {file}{did_you_mean(column, available)} "
                            f"(columns: {shown or 'none'})", arg=f"columns.{field}")
        mapping[field] = column
    return mapping


def read_text(file: str) -> str:
    """A text file decoded as UTF-8 (a leading byte-order mark is dropped); other encodings are a
    :class:`DataError` naming the line."""
    with open(file, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"{file}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the file as UTF-8") from None


def parse_list_cell(value: Any) -> Any:
    """A list written into a text cell (CSV): JSON, or a Python literal as NegCLIP's TSV has."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text.startswith("["):
        return [value]
    try:
        return json.loads(text)
    except ValueError:
        return ast.literal_eval(text)


def convert_count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"{where}: expected an integer count, got {_describe(value)}")
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{where}: expected an integer count, got {_describe(value)}") from None
    if not number.is_integer():
        raise DataError(f"{where}: expected an integer count, got {_describe(value)}")
    return int(number)


def read_classnames(classnames: list[str] | str | None) -> list[str] | None:
    """Class names from a list, or from a file: a JSON list, a JSON object with ``classnames``, or one per line."""
    if classnames is None or isinstance(classnames, list):
        return classnames
    path = _absolute(classnames)
    if not os.path.isfile(path):
        raise DataError(f"no such file: {path}", arg="classnames")
    text = read_text(path)
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as err:
            raise DataError(f"{path}: invalid JSON: {err}") from None
        data = data.get("classnames") if isinstance(data, dict) else data
        if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
            raise DataError(f"{path}: classnames: expected a list of strings (or an object with a 'classnames' list)")
        return data
    return [line.strip() for line in text.splitlines() if line.strip()]


def encode_labels(labels: Sequence[Any], classnames: list[str] | None, where,
                  key: str = "label") -> tuple[list[int | None], list[str] | None]:
    """Labels as class indices: strings are class names, ints are indices into ``classnames``.

    Args:
        labels: One raw label per record (None where missing).
        classnames: Given class names, or None (string labels then define them, sorted).
        where: ``where(i)`` locates record ``i`` for errors.
        key: The label column's name, for errors.
    """
    present = [(i, v) for i, v in enumerate(labels) if v is not None]
    if not present:
        return list(labels), classnames
    names = [(i, v) for i, v in present if isinstance(v, str)]
    if names and len(names) != len(present):
        i = next(i for i, v in present if not isinstance(v, str))
        raise DataError(f"{where(i)}: {key}: mixes class names and numbers; use one kind")
    if not names:
        for i, v in present:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (classnames is not None and v >= len(classnames)):
                limit = f" in 0..{len(classnames) - 1}" if classnames else " >= 0"
                raise DataError(f"{where(i)}: {key}: expected a class index{limit}, got {_describe(v)}")
        return list(labels), classnames
    if classnames is None:
        classnames = sorted({v for _, v in names})
    position = {c: k for k, c in enumerate(classnames)}
    out: list[int | None] = [None] * len(labels)
    for i, v in names:
        if v not in position:
            raise DataError(f"{where(i)}: {key}: {v!r} is not in classnames{did_you_mean(v, classnames)}")
        out[i] = position[v]
    return out, classnames
