"""Errors that mean bad input from the user: the CLI prints them as one line, without a traceback."""

from __future__ import annotations

from tunevl.config.errors import RecipeError


class BundleError(ValueError):
    """A bundle that cannot be loaded safely (wrong base model, unmatched adapter, newer format)."""


class UnsupportedModelError(ValueError):
    """A checkpoint no family serves: its ``config.json`` names an unsupported ``model_type`` (or one of another
    family than ``model.family``)."""


class TrainingError(RuntimeError):
    """Training stopped on a condition that needs the user's attention (for example a NaN loss)."""


class DataError(ValueError):
    """Bad training or evaluation data: a missing file or column, an unreadable image, an empty set.

    ``str()`` is one line that names where the problem is, e.g.
    ``data.jsonl:8: record 7: image: image not found: /data/images/7.png``.

    Args:
        message: What is wrong and where in the data.
        arg: The source argument at fault (``path``, ``columns.text``), when the problem is
            in the recipe node rather than in the data; ``str()`` starts with it, and
            :func:`tunevl.data.preflight.build_dataset` locates it in the recipe.
    """

    def __init__(self, message: str, *, arg: str | None = None):
        self.arg = arg
        self.detail = _one_line(str(message))
        super().__init__(f"{arg}: {self.detail}" if arg else self.detail)


def _one_line(message: str) -> str:
    # A DataLoader worker re-raises as DataError("Caught DataError in DataLoader worker ...
    # Original Traceback ..."); keep only the original message, so the CLI still prints one line.
    if message.startswith("Caught DataError") and "Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        message = last.split("DataError: ", 1)[-1]
    return " ".join(message.split())


USER_ERRORS = (RecipeError, BundleError, TrainingError, DataError, UnsupportedModelError, FileNotFoundError)

__all__ = ["BundleError", "DataError", "RecipeError", "TrainingError", "USER_ERRORS", "UnsupportedModelError"]
