"""Errors that mean bad input from the user: the CLI prints them as one line, without a traceback."""

from tunevl.config.errors import RecipeError


class BundleError(ValueError):
    """A bundle that cannot be loaded safely (wrong base model, unmatched adapter, newer format)."""


class TrainingError(RuntimeError):
    """Training stopped on a condition that needs the user's attention (for example a NaN loss)."""


USER_ERRORS = (RecipeError, BundleError, TrainingError, FileNotFoundError)

__all__ = ["BundleError", "RecipeError", "TrainingError", "USER_ERRORS"]
