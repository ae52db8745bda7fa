"""Image loading shared by every family view, with errors that name the file and the record."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

from PIL import Image

from tunevl.errors import DataError

# What PIL raises on a missing, truncated or corrupt file (a broken PNG raises SyntaxError).
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclass(frozen=True)
class ImageRef:
    """A not-yet-decoded image of a record: a file path or encoded bytes, plus where it came from.

    Sources put these in records instead of decoded images, so records stay small and an
    image that fails to decode (in a collate, mid-run) is reported with its record.

    Args:
        path: The image file (absolute once resolved), or a label for ``data``.
        data: Encoded image bytes (parquet / ``datasets`` image columns), or None.
        origin: Where the record is, e.g. ``"/d/data.jsonl:8: record 7: image"``.
    """

    path: str | None = None
    data: bytes | None = None
    origin: str = ""

    def __fspath__(self) -> str:
        if self.path is None:
            raise TypeError("an in-memory image has no file path")
        return self.path

    def __str__(self) -> str:
        return self.path if self.path is not None else "<image bytes>"

    def describe(self) -> str:
        return self.path if self.path is not None else "<embedded image bytes>"

    def error(self, reason: str) -> DataError:
        prefix = f"{self.origin}: " if self.origin else ""
        return DataError(f"{prefix}{reason}")

    def exists(self) -> bool:
        """True for embedded bytes or an existing file (cheap: one ``stat``)."""
        return self.data is not None or (self.path is not None and os.path.isfile(self.path))

    def open(self) -> Image.Image:
        """Decode to an RGB image; a missing or unreadable image raises :class:`DataError`."""
        return self._read(lambda im: im.convert("RGB"))

    def size(self) -> tuple[int, int]:
        """``(width, height)`` from the file header, without decoding the pixels."""
        return self._read(lambda im: im.size)

    def _read(self, use):
        if self.data is None and not self.exists():
            raise self.error(f"image not found: {self.describe()}")
        try:
            with Image.open(io.BytesIO(self.data) if self.data is not None else self.path) as im:
                return use(im)
        except _READ_ERRORS as err:
            raise self.error(f"cannot read image {self.describe()}: {err}") from None


def _as_ref(image) -> ImageRef:
    if isinstance(image, ImageRef):
        return image
    if isinstance(image, (str, os.PathLike)):
        return ImageRef(path=os.fspath(image))
    if isinstance(image, (bytes, bytearray)):
        return ImageRef(data=bytes(image))
    if isinstance(image, dict) and ("bytes" in image or "path" in image):
        return ImageRef(path=image.get("path"), data=image.get("bytes"))
    raise TypeError(f"expected a PIL image, a path or image bytes, got {type(image).__name__}")


def load_image(image) -> Image.Image:
    """Return an RGB PIL image from a PIL image, an :class:`ImageRef`, a path, encoded bytes
    or a ``datasets`` image dict (``{"bytes": ..., "path": ...}``)."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    return _as_ref(image).open()


def image_size(image) -> tuple[int, int]:
    """``(width, height)`` of any image :func:`load_image` accepts, reading only the file header."""
    if isinstance(image, Image.Image):
        return image.size
    return _as_ref(image).size()
