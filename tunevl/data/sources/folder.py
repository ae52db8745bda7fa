"""Classification sources: an image folder (class = sub-folder name) and CoOp split files."""

from __future__ import annotations

import os
from typing import Any, Literal

from tunevl.config.errors import did_you_mean
from tunevl.data.sources.base import Source
from tunevl.data.sources.captions import read_json
from tunevl.errors import DataError

#: File endings the image folder reads (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _check_template(template: str | None) -> None:
    if template is not None and "{}" not in template:
        raise DataError(f"{template!r} needs '{{}}' where the class name goes", arg="text_template")


class _ClassSource(Source):
    """Records ``{image, label}`` (plus ``text`` from a template) over ``(image path, label)`` items."""

    def _set_items(self, items: list[tuple[str, int]], classnames: list[str], text_template: str | None,
                   image_key: str) -> None:
        self._items = items
        self.classnames = classnames
        self.text_template = text_template
        self.columns = {"image": image_key, "label": "label"}
        if text_template is not None:
            self.columns["text"] = "text_template"
        self._fields = frozenset(self.columns) if items else frozenset()

    def __len__(self) -> int:
        return len(self._items)

    def _record(self, i: int) -> dict[str, Any]:
        path, label = self._items[i]
        rec: dict[str, Any] = {"image": path, "label": label}
        if self.text_template is not None:
            rec["text"] = self.text_template.format(self.classnames[label])
        return rec

    def first_missing(self, field: str) -> int | None:
        return None if field in self.fields or not self._items else 0


class ImageFolder(_ClassSource):
    """Classification records from ``path/<class>/<image>``: the class is the sub-folder's name.

    Classes are the sub-folders in sorted order (hidden ones skipped); images are found
    recursively by their ending (:data:`IMAGE_EXTENSIONS`), in sorted order.

    Args:
        path: The root folder.
        classnames: Prompt-ready names for some folders, e.g. ``{airplanes: airplane}``;
            the others keep their folder name.
        text_template: Also give each record ``text = text_template.format(classname)``,
            e.g. ``"a photo of a {}."``, so a contrastive objective can train on the folder.
        max_bad_images: Records with missing or unreadable images that pre-flight may drop.
        eval_split: Hold out this share (float in (0, 1)) or number (int) of records for evaluation
            (used when the recipe has no ``data.eval``); training uses the rest.
        eval_split_seed: Seed of the held-out choice.
    """

    def __init__(self, path: str, classnames: dict[str, str] | None = None, text_template: str | None = None,
                 max_bad_images: int = 0, eval_split: float | int | None = None, eval_split_seed: int = 0):
        root = os.path.abspath(os.path.expanduser(path))
        super().__init__(path, None, max_bad_images, default_root=root, eval_split=eval_split,
                         eval_split_seed=eval_split_seed)
        if not os.path.isdir(self.file):
            raise DataError(f"not a folder: {self.file}", arg="path")
        _check_template(text_template)
        folders = sorted(d.name for d in os.scandir(self.file) if d.is_dir() and not d.name.startswith("."))
        for name in classnames or {}:
            if name not in folders:
                raise DataError(f"no class folder {name!r} in {self.file}{did_you_mean(name, folders)}", arg=f"classnames.{name}")
        items = []
        for label, folder in enumerate(folders):
            for dirpath, dirnames, filenames in os.walk(os.path.join(self.file, folder)):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if name.lower().endswith(IMAGE_EXTENSIONS):
                        items.append((os.path.relpath(os.path.join(dirpath, name), self.file), label))
        names = [(classnames or {}).get(f, f) for f in folders]
        self._set_items(items, names, text_template, "image")

    def location(self, i: int) -> str:
        return f"{self.file}: record {i} ({self._items[i][0]})"


class CoopSplit(_ClassSource):
    """Records of one split of a CoOp ``split_zhou_<Dataset>.json`` file (FORMATS.md §10).

    The file is ``{"train"|"val"|"test": [[impath, label, classname], ...]}``; ``classnames``
    comes from the class names the file gives each label.

    Args:
        path: The split file.
        split: ``train``, ``val`` or ``test``.
        image_root: The dataset's image folder, e.g. ``oxford_pets/images`` (default: the file's folder).
        text_template: Also give each record ``text = text_template.format(classname)``.
        max_bad_images: Records with missing or unreadable images that pre-flight may drop.
    """

    def __init__(self, path: str, split: Literal["train", "val", "test"] = "test", image_root: str | None = None,
                 text_template: str | None = None, max_bad_images: int = 0):
        super().__init__(path, image_root, max_bad_images)
        _check_template(text_template)
        data = read_json(self.file)
        if not isinstance(data, dict) or not any(isinstance(data.get(s), list) for s in ("train", "val", "test")):
            raise DataError(f"{self.file}: not a CoOp split file (expected train/val/test lists of [impath, label, classname])")
        if not isinstance(data.get(split), list):
            raise DataError(f"no split {split!r} in {self.file} (splits: {', '.join(k for k in data if isinstance(data[k], list))})",
                            arg="split")
        names: dict[int, str] = {}
        self.split = split
        items = []
        for part in ("train", "val", "test"):
            for k, entry in enumerate(data.get(part) or ()):
                if (not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str)
                        or isinstance(entry[1], bool) or not isinstance(entry[1], int) or entry[1] < 0):
                    raise DataError(f"{self.file}: {part}[{k}]: expected [impath, label, classname], got {str(entry)[:60]}")
                impath, label, name = entry
                if names.setdefault(label, name) != name:
                    raise DataError(f"{self.file}: {part}[{k}]: label {label} is named {name!r} here but {names[label]!r} before")
                if part == split:
                    items.append((impath, label))
        missing = [k for k in range(max(names, default=-1) + 1) if k not in names]
        if missing:
            raise DataError(f"{self.file}: no class name for label {missing[0]} (labels must be 0..N-1)")
        self._set_items(items, [names[k] for k in range(len(names))], text_template, "impath")

    def location(self, i: int) -> str:
        return f"{self.file}: record {i} ({self.split}[{i}])"
