"""Tabular sources: JSONL (or a JSON list), CSV/TSV, parquet and saved ``datasets`` folders.

Each maps the data's columns to record fields: a column named like a field is used as is,
``columns: {text: caption, image: file}`` maps others (see :func:`map_columns`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

from tunevl.data.sources.base import (
    IMAGE_LIST_FIELDS,
    LIST_FIELDS,
    Source,
    convert_count,
    encode_labels,
    map_columns,
    parse_list_cell,
    read_classnames,
    read_text,
)
from tunevl.errors import DataError


class _RowSource(Source):
    """Records held in memory as mapped field dicts, checked when the file is read."""

    records_in_memory = True  # pre-flight checks every record, not a sample

    def _load(self, rows: list[dict], lines: list[int] | None, columns, classnames, header=(), text_cells=False) -> None:
        self._lines = lines
        available = list(dict.fromkeys([*header, *(k for row in rows for k in row)]))
        self.columns = map_columns(available, columns, self.file)
        self._rows: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            rec = {}
            for field, column in self.columns.items():
                value = row.get(column)
                if value is None:
                    continue
                if field in LIST_FIELDS and isinstance(value, str):
                    try:
                        value = parse_list_cell(value)
                    except (ValueError, SyntaxError):
                        raise DataError(f"{self.location(i)}: {column}: expected a list, got {value[:40]!r}") from None
                if field == "count":
                    value = convert_count(value, f"{self.location(i)}: {column}")
                rec[field] = value
            self._rows.append(rec)
        given = read_classnames(classnames)
        if "label" in self.columns:
            labels = [r.get("label") for r in self._rows]
            if text_cells and all(v is None or v.strip().isdigit() for v in labels):  # CSV class indices
                labels = [None if v is None else int(v) for v in labels]
            labels, given = encode_labels(labels, given, self.location, self.column("label"))
            for rec, label in zip(self._rows, labels):
                if label is not None:
                    rec["label"] = label
        self.classnames = given

    def __len__(self) -> int:
        return len(self._rows)

    def _record(self, i: int) -> dict[str, Any]:
        return dict(self._rows[i])

    def _line(self, i: int) -> int | None:
        return self._lines[i] if self._lines is not None else None

    def first_missing(self, field: str) -> int | None:
        return next((i for i, r in enumerate(self._rows) if r.get(field) is None), None)


class JsonlSource(_RowSource):
    """Records from a JSON Lines file (one object per line), or from a ``.json`` file holding a list of objects.

    The JSON list form reads, e.g., BLIP/LAVIS retrieval files
    (``[{"image": "val2014/x.jpg", "caption": [5 captions]}]`` with ``columns: {captions: caption}``).

    Args:
        path: The ``.jsonl`` (or ``.json``) file.
        columns: Field → column mapping, e.g. ``{text: caption, image: file}``; ``null`` drops a field.
        image_root: Folder for relative image paths (default: the file's folder).
        classnames: Class names indexed by ``label`` (a list or a file); string labels
            define them when omitted.
        max_bad_images: Records with missing or unreadable images that pre-flight may drop.
        eval_split: Hold out this share (float in (0, 1)) or number (int) of records for evaluation
            (used when the recipe has no ``data.eval``); training uses the rest.
        eval_split_seed: Seed of the held-out choice.
    """

    def __init__(self, path: str, columns: dict[str, str | None] | None = None, image_root: str | None = None,
                 classnames: list[str] | str | None = None, max_bad_images: int = 0,
                 eval_split: float | int | None = None, eval_split_seed: int = 0):
        super().__init__(path, image_root, max_bad_images, eval_split=eval_split, eval_split_seed=eval_split_seed)
        rows, lines = _read_json_rows(self.file)
        self._load(rows, lines, columns, classnames)


def _read_json_rows(file: str) -> tuple[list[dict], list[int] | None]:
    with io.StringIO(read_text(file)) as f:
        head = f.read(4096).lstrip()
        f.seek(0)
        if head.startswith("["):
            try:
                rows = json.load(f)
            except ValueError as err:
                raise DataError(f"{file}: invalid JSON: {err}") from None
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise DataError(f"{file}: record {i}: expected a JSON object, got {type(row).__name__}")
            return rows, None
        rows, lines = [], []
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise DataError(f"{file}:{lineno}: invalid JSON: {err}") from None
            if not isinstance(row, dict):
                raise DataError(f"{file}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
            lines.append(lineno)
    return rows, lines


class CsvSource(_RowSource):
    """Records from a CSV or TSV file with a header row; empty cells count as missing.

    List fields (``captions``, ``negatives``, ``images``, ``messages``) may hold a JSON or
    Python list literal, as NegCLIP's TSV does. A ``label`` column of whole numbers holds
    class indices; any other text in it is a class name.

    Args:
        path: The file.
        columns: Field → column mapping, e.g. ``{text: title, image: filepath}``.
        image_root: Folder for relative image paths (default: the file's folder).
        classnames: Class names indexed by ``label`` (a list or a file).
        delimiter: Cell separator; default tab for ``.tsv`` files, comma otherwise.
        max_bad_images: Records with missing or unreadable images that pre-flight may drop.
        eval_split: Hold out this share (float in (0, 1)) or number (int) of records for evaluation
            (used when the recipe has no ``data.eval``); training uses the rest.
        eval_split_seed: Seed of the held-out choice.
    """

    def __init__(self, path: str, columns: dict[str, str | None] | None = None, image_root: str | None = None,
                 classnames: list[str] | str | None = None, delimiter: str | None = None, max_bad_images: int = 0,
                 eval_split: float | int | None = None, eval_split_seed: int = 0):
        super().__init__(path, image_root, max_bad_images, eval_split=eval_split, eval_split_seed=eval_split_seed)
        delimiter = delimiter or ("\t" if self.file.endswith(".tsv") else ",")
        rows, lines = [], []
        with io.StringIO(read_text(self.file), newline="") as f:  # a byte-order mark in the header is dropped
            reader = csv.DictReader(f, delimiter=delimiter)
            start = 2
            try:
                for row in reader:
                    rows.append({k: (v if v != "" else None) for k, v in row.items() if k is not None})
                    lines.append(start)
                    start = reader.line_num + 1
            except csv.Error as err:
                raise DataError(f"{self.file}:{reader.line_num}: invalid CSV: {err}") from None
        if reader.fieldnames is None:
            raise DataError(f"{self.file}: the file is empty (no header row)")
        self._load(rows, lines, columns, classnames, header=[n for n in reader.fieldnames if n], text_cells=True)


class _ArrowSource(Source):
    """Records read lazily from an Arrow table (memory-mapped where the files allow)."""

    def _init_table(self, table, features, columns, classnames) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        self._table = table
        self.columns = map_columns(table.column_names, columns, self.file)
        given = read_classnames(classnames)
        self._label_index: dict[str, int] | None = None
        if "label" in self.columns:
            name = self.columns["label"]
            col = table.column(name)
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                values = pc.unique(col.drop_null()).to_pylist()
                where = lambda i: self.location(int(pc.index(col, values[i]).as_py()))  # noqa: E731
                _, given = encode_labels(values, given, where, name)
                self._label_index = {c: k for k, c in enumerate(given)}
            elif pa.types.is_integer(col.type):
                feature = (features or {}).get(name)
                if given is None and hasattr(feature, "names"):  # a datasets ClassLabel
                    given = list(feature.names)
                low, high = pc.min(col).as_py(), pc.max(col).as_py()
                if low is not None and (low < 0 or (given is not None and high >= len(given))):
                    bad = low if low < 0 else high
                    i = int(pc.index(col, bad).as_py())
                    limit = f"0..{len(given) - 1}" if given else ">= 0"
                    raise DataError(f"{self.location(i)}: {name}: expected a class index in {limit}, got {bad}")
            else:
                raise DataError(f"{self.file}: {name}: labels must be class names or integers, got {col.type}")
        self.classnames = given

    def __len__(self) -> int:
        return self._table.num_rows

    def _record(self, i: int) -> dict[str, Any]:
        rec = {}
        for field, column in self.columns.items():
            value = self._table.column(column)[i].as_py()
            if value is None:
                continue
            if field == "label" and self._label_index is not None:
                value = self._label_index[value]
            elif field == "count":
                value = convert_count(value, f"{self.location(i)}: {column}")
            elif field in LIST_FIELDS and isinstance(value, str):
                value = parse_list_cell(value)
            rec[field] = value
        return rec

    def first_missing(self, field: str) -> int | None:
        import pyarrow.compute as pc

        if field not in self.columns:
            return 0 if len(self) else None
        col = self._table.column(self.columns[field])
        return None if col.null_count == 0 else int(pc.index(col.is_null(), True).as_py())

    def image_files(self):
        import pyarrow as pa
        import pyarrow.compute as pc

        for field in ("image", "negative_image", "contrast_image"):
            if field not in self.columns:
                continue
            col = self._table.column(self.columns[field])
            if pa.types.is_struct(col.type):  # datasets' Image: {bytes, path}; files only where bytes is null
                paths = pc.struct_field(col, "path").to_pylist()
                embedded = pc.is_valid(pc.struct_field(col, "bytes")).to_pylist()
                paths = [None if e else p for p, e in zip(paths, embedded)]
            elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                paths = col.to_pylist()
            else:
                continue
            for i, path in enumerate(paths):
                if path:
                    yield i, field, self.column(field), self.resolve(path)
        for field in (f for f in IMAGE_LIST_FIELDS if f in self.columns):  # rare: per-record lists, read record by record
            for i in range(len(self)):
                for k, value in enumerate(self._record(i).get(field) or ()):
                    path = value.get("path") if isinstance(value, dict) and value.get("bytes") is None else value
                    if isinstance(path, str) and path:
                        yield i, field, f"{self.column(field)}[{k}]", self.resolve(path)


class ParquetSource(_ArrowSource):
    """Records from a parquet file, or a folder of parquet files, memory-mapped.

    Image columns may hold paths or ``datasets`` image structs ``{bytes, path}``; a
    ``datasets`` ``ClassLabel`` supplies ``classnames``.

    Args:
        path: A ``.parquet`` file or a folder of them.
        columns: Field → column mapping, e.g. ``{text: caption, image: jpg}``.
        image_root: Folder for relative image paths (default: the file's folder, or the folder itself).
        classnames: Class names indexed by ``label`` (a list or a file).
        max_bad_images: Records with missing or unreadable images that pre-flight may drop.
        eval_split: Hold out this share (float in (0, 1)) or number (int) of records for evaluation
            (used when the recipe has no ``data.eval``); training uses the rest.
        eval_split_seed: Seed of the held-out choice.
    """

    def __init__(self, path: str, columns: dict[str, str | None] | None = None, image_root: str | None = None,
                 classnames: list[str] | str | None = None, max_bad_images: int = 0,
                 eval_split: float | int | None = None, eval_split_seed: int = 0):
        import pyarrow.parquet as pq

        file = os.path.abspath(os.path.expanduser(path))
        super().__init__(path, image_root, max_bad_images, default_root=file if os.path.isdir(file) else None,
                         eval_split=eval_split, eval_split_seed=eval_split_seed)
        try:
            table = pq.read_table(self.file, memory_map=True)
        except (OSError, ValueError) as err:
            raise DataError(f"{self.file}: cannot read parquet: {err}") from None
        self._init_table(table, _features(table.schema), columns, classnames)


class SavedDataset(_ArrowSource):
    """Records from a folder written by ``datasets``' ``save_to_disk`` (read with ``load_from_disk``).

    Args:
        path: The folder.
        split: The split of a saved ``DatasetDict`` (needed when it holds several).
        columns: Field → column mapping.
        image_root: Folder for relative image paths (default: the dataset folder).
        classnames: Class names indexed by ``label``; a ``ClassLabel`` feature supplies them otherwise.
        max_bad_images: Records with missing or unreadable images that pre-flight may drop.
        eval_split: Hold out this share (float in (0, 1)) or number (int) of records for evaluation
            (used when the recipe has no ``data.eval``); training uses the rest.
        eval_split_seed: Seed of the held-out choice.
    """

    def __init__(self, path: str, split: str | None = None, columns: dict[str, str | None] | None = None,
                 image_root: str | None = None, classnames: list[str] | str | None = None, max_bad_images: int = 0,
                 eval_split: float | int | None = None, eval_split_seed: int = 0):
        import datasets

        file = os.path.abspath(os.path.expanduser(path))
        super().__init__(path, image_root, max_bad_images, default_root=file, eval_split=eval_split,
                         eval_split_seed=eval_split_seed)
        try:
            ds = datasets.load_from_disk(self.file)
        except (FileNotFoundError, ValueError, OSError) as err:
            raise DataError(f"{self.file}: not a folder written by save_to_disk: {err}") from None
        if isinstance(ds, datasets.DatasetDict):
            names = list(ds)
            if split is None and len(names) == 1:
                split = names[0]
            if split not in ds:
                raise DataError(f"{'choose' if split is None else f'no split {split!r} in {self.file};'} "
                                f"one of {', '.join(names)}", arg="split")
            ds = ds[split]
        elif split is not None:
            raise DataError(f"{self.file} holds one dataset, not splits; remove split", arg="split")
        table = ds.data.table
        if ds._indices is not None:  # a saved selection: apply its index mapping
            table = table.take(ds._indices.column(0))
        self._init_table(table, ds.features, columns, classnames)


def _features(schema) -> dict:
    """``datasets`` features recorded in a parquet schema (for ClassLabel names), or {}."""
    if not schema.metadata or b"huggingface" not in schema.metadata:
        return {}
    try:
        import datasets

        return dict(datasets.Features.from_arrow_schema(schema))
    except Exception:  # noqa: BLE001 - metadata from another version: names are a nicety
        return {}
