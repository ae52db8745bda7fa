"""Where tiny models live on disk: SHA-256 manifests of shipped folders, and the cache that models built on
demand are saved into once (``$TUNEVL_CACHE`` or ``~/.cache/tunevl``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

MANIFEST = "MANIFEST.json"
BUILD_MARKER = "TUNEVL_BUILD"


class BuiltinModelError(RuntimeError):
    """A shipped model folder is missing or does not match its manifest."""


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: str | Path, **info) -> Path:
    """Write ``MANIFEST.json`` with the SHA-256 of every file in ``folder`` plus ``info``."""
    folder = Path(folder)
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    out = folder / MANIFEST
    out.write_text(json.dumps({"files": files, **info}, indent=2) + "\n", encoding="utf-8")
    return out


def verify_manifest(folder: str | Path) -> None:
    """Check every file listed in ``folder/MANIFEST.json`` against its SHA-256.

    Raises:
        BuiltinModelError: the manifest or a file is missing, or a hash differs.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise BuiltinModelError(f"{manifest} is missing; reinstall tunevl or run scripts/make_tiny_models.py")
    files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    for name, expected in files.items():
        p = folder / name
        if not p.is_file():
            raise BuiltinModelError(f"{p} is missing (listed in {manifest})")
        actual = sha256_file(p)
        if actual != expected:
            raise BuiltinModelError(
                f"{p} is corrupted or was modified: sha256 {actual} != {expected} recorded in {manifest}; "
                "reinstall tunevl or regenerate with scripts/make_tiny_models.py"
            )


def cache_dir() -> Path:
    """Where tiny models built on demand are kept: ``$TUNEVL_CACHE`` or ``~/.cache/tunevl``."""
    return Path(os.environ.get("TUNEVL_CACHE") or Path.home() / ".cache" / "tunevl")


def build_once(name: str, version: str, build: Callable[[], tuple]) -> str:
    """Save ``build()``'s ``(model, processor)`` into ``cache_dir()/name`` unless a build of ``version`` is there.

    Atomic: each process builds in a private temporary folder and the first rename wins (ranks may race).
    """
    folder = cache_dir() / name
    marker = folder / BUILD_MARKER
    if marker.is_file() and marker.read_text().strip() == version:
        return str(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    model, processor = build()
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / BUILD_MARKER).write_text(version + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    try:
        tmp.rename(folder)
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)
