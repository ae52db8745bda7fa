"""Caption sources in their native formats: COCO captions JSON and Karpathy split JSON (FORMATS.md §9).

Both have several captions per image and two modes:

- ``pairs``: one record per (image, caption) pair, ``{image, text}``: for training;
- ``images``: one record per image, ``{image, captions, text}`` with ``text`` the first
  caption: for retrieval evaluation, where each caption is a text query whose only
  relevant image is its own (:mod:`tunevl.eval.retrieval`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

from tunevl.config.errors import did_you_mean
from tunevl.data.sources.base import Source
from tunevl.errors import DataError

Mode = Literal["pairs", "images"]


def read_json(file: str) -> Any:
    """The parsed JSON file, or a :class:`DataError` naming it."""
    from tunevl.data.sources.base import read_text

    try:
        return json.loads(read_text(file))
    except ValueError as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{file}: invalid JSON: {err}") from None


class _CaptionSource(Source):
    """Records from ``(image path, captions, where)`` entries, in pairs or images mode."""

    def _set_entries(self, entries: list[tuple[str, list[str], str]], mode: str, max_captions: int | None,
                     image_key: str, caption_key: str) -> None:
        if mode not in ("pairs", "images"):
            raise DataError(f"expected 'pairs' or 'images', got {mode!r}", arg="mode")
        if max_captions is not None and max_captions < 1:
            raise DataError(f"must be >= 1 or null, got {max_captions}", arg="max_captions")
        self.mode = mode
        self._entries = entries
        if mode == "pairs":
            self._index = [(e, c) for e, (_, caps, _) in enumerate(entries) for c in range(len(caps))]
            self.columns = {"image": image_key, "text": caption_key}
        else:
            self._index = [(e, None) for e, (_, caps, _) in enumerate(entries) if caps]
            self.max_captions = max_captions
            self.columns = {"image": image_key, "text": caption_key, "captions": caption_key}
        self._fields = frozenset(self.columns) if self._index else frozenset()

    def __len__(self) -> int:
        return len(self._index)

    def _record(self, i: int) -> dict[str, Any]:
        e, c = self._index[i]
        path, captions, _ = self._entries[e]
        if c is not None:
            return {"image": path, "text": captions[c]}
        kept = captions[: self.max_captions] if self.max_captions else list(captions)
        return {"image": path, "captions": kept, "text": kept[0]}

    def first_missing(self, field: str) -> int | None:
        return None if field in self.fields or not self._index else 0

    def location(self, i: int) -> str:
        e, c = self._index[i]
        where = self._entries[e][2]
        return f"{self.file}: record {i} ({where}{f', caption {c}' if c is not None else ''})"


class CocoCaptions(_CaptionSource):
    """Records from a COCO captions file, ``annotations/captions_{train,val}2017.json``.

    Images are ``image_root/<file_name>``; captions are grouped by ``image_id``.

    Args:
        path: The annotation file.
        image_root: The image folder, e.g. ``coco/val2017`` (default: the file's folder).
        mode: ``pairs`` (one record per caption, for training) or ``images`` (one record
            per image with all its ``captions``, for retrieval evaluation).
        max_captions: In ``images`` mode, keep the first N captions of each image (the
            standard protocol uses 5); null keeps all.
        max_bad_images: Records with missing or unreadable images that pre-flight may drop.
    """

    def __init__(self, path: str, image_root: str | None = None, mode: Mode = "pairs", max_captions: int | None = 5,
                 max_bad_images: int = 0):
        super().__init__(path, image_root, max_bad_images)
        data = read_json(self.file)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
            raise DataError(f"{self.file}: not a COCO captions file (expected 'images' and 'annotations' lists)")
        position: dict[Any, int] = {}
        entries: list[tuple[str, list[str], str]] = []
        for k, img in enumerate(data["images"]):
            if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
                raise DataError(f"{self.file}: images[{k}]: expected an object with 'id' and 'file_name'")
            position[img["id"]] = len(entries)
            entries.append((img["file_name"], [], f"images[{k}], id {img['id']}"))
        for k, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str):
                raise DataError(f"{self.file}: annotations[{k}]: caption: expected a string")
            if ann.get("image_id") not in position:
                raise DataError(f"{self.file}: annotations[{k}]: image_id: {ann.get('image_id')!r} is not in images")
            entries[position[ann["image_id"]]][1].append(ann["caption"].strip())
        self._set_entries(entries, mode, max_captions, "file_name", "caption")


class KarpathySplit(_CaptionSource):
    """Records of a Karpathy split file, ``dataset_coco.json`` or ``dataset_flickr30k.json``.

    Images are ``image_root/<filepath>/<filename>`` (Flickr30k has no ``filepath``);
    captions are each sentence's ``raw`` text.

    Args:
        path: The JSON file.
        split: ``train``, ``val``, ``test`` or ``restval``, or a list (COCO training
            usually takes ``[train, restval]``).
        image_root: The image folder, e.g. ``coco`` (holding ``train2014/``, ``val2014/``)
            or ``flickr30k-images`` (default: the file's folder).
        mode: ``pairs`` or ``images`` (see :class:`CocoCaptions`); by default ``pairs``
            for train/restval and ``images`` for val/test.
        max_captions: In ``images`` mode, keep the first N captions of each image (5 is
            the standard protocol); null keeps all.
        max_bad_images: Records with missing or unreadable images that pre-flight may drop.
    """

    def __init__(self, path: str, split: str | list[str] = "test", image_root: str | None = None,
                 mode: Mode | None = None, max_captions: int | None = 5, max_bad_images: int = 0):
        super().__init__(path, image_root, max_bad_images)
        data = read_json(self.file)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DataError(f"{self.file}: not a Karpathy split file (expected an 'images' list)")
        wanted = [split] if isinstance(split, str) else list(split)
        present = list(dict.fromkeys(img.get("split") for img in data["images"] if isinstance(img, dict)))
        for s in wanted:
            if s not in present:
                raise DataError(f"no images in split {s!r} in {self.file}{did_you_mean(s, present)} "
                                f"(splits in the file: {', '.join(map(str, present))})", arg="split")
        entries = []
        for k, img in enumerate(data["images"]):
            if img.get("split") not in wanted:
                continue
            if not isinstance(img.get("filename"), str) or not isinstance(img.get("sentences"), list):
                raise DataError(f"{self.file}: images[{k}]: expected 'filename' and a 'sentences' list")
            captions = []
            for j, sent in enumerate(img["sentences"]):
                text = sent.get("raw") if isinstance(sent, dict) else None
                if text is None and isinstance(sent, dict) and isinstance(sent.get("tokens"), list):
                    text = " ".join(sent["tokens"])
                if not isinstance(text, str):
                    raise DataError(f"{self.file}: images[{k}].sentences[{j}]: expected 'raw' text")
                captions.append(text.strip())
            path = os.path.join(img["filepath"], img["filename"]) if img.get("filepath") else img["filename"]
            entries.append((path, captions, f"images[{k}], imgid {img.get('imgid', k)}"))
        if mode is None:
            mode = "pairs" if set(wanted) <= {"train", "restval"} else "images"
        self._set_entries(entries, mode, max_captions, "filename", "sentences")
