"""Moved to :mod:`tunevl.inference.generator`; ``Generator`` stays importable from here."""

from tunevl.inference.generator import Generator

__all__ = ["Generator"]
