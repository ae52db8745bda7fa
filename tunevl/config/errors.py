"""Recipe errors that point at a file and line (or at the command-line override).

Every problem found while reading, overriding or checking a recipe is raised as a
:class:`RecipeError` whose ``str()`` is one line, e.g.::

    recipes/x.yaml:12: objectives.0.wieght: unknown key; did you mean 'weight'?
    override 'train.lr=3': train.lr: unknown key; did you mean 'learning_rate'?

Paths inside a recipe are tuples such as ``("objectives", 0, "weight")``: strings are
mapping keys and ints are list indices. ``format_path`` turns one into the dotted form.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

KeyPath = tuple[Any, ...]


class Origin(NamedTuple):
    """Where a recipe value came from: a file and 1-based line, or an override."""

    file: str | None
    line: int | None = None
    override: str | None = None


Positions = dict[KeyPath, Origin]


class RecipeError(ValueError):
    """A recipe problem, located at ``file:line`` or at a command-line override.

    Args:
        message: What is wrong, one line.
        file: Recipe file name, or None.
        line: 1-based line, or None.
        key: Dotted path of the offending value, e.g. ``objectives.0.weight``.
        override: The override text (``train.lr=3``) when the value came from one;
            it replaces ``file:line`` in the message.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str = "",
        override: str | None = None,
    ):
        self.message = " ".join(str(message).split())
        self.file = file
        self.line = line
        self.key = key
        self.override = override
        super().__init__(str(self))

    def __reduce__(self):  # keep the fields across pickling (e.g. from worker processes)
        return _rebuild, (self.message, self.file, self.line, self.key, self.override)

    def __str__(self) -> str:
        parts = []
        if self.override is not None:
            parts.append(f"override '{self.override}'")
        elif self.file is not None:
            parts.append(f"{self.file}:{self.line}" if self.line is not None else self.file)
        if self.key:
            parts.append(self.key)
        parts.append(self.message)
        return ": ".join(parts)

    @classmethod
    def at(
        cls,
        positions: Mapping[KeyPath, Origin] | None,
        path: KeyPath | str,
        message: str,
        *,
        file: str | None = None,
    ) -> RecipeError:
        """Builds an error located at ``path`` (or its nearest recorded parent).

        Args:
            positions: Position map from the loader (may be None or empty).
            path: Tuple path (preferred) or dotted key of the offending value.
            message: What is wrong.
            file: Fallback file name when no position is recorded.
        """
        path = as_path(path)
        origin = locate(positions, path) or Origin(file)
        return cls(
            message,
            file=origin.file if origin.file is not None else file,
            line=origin.line,
            key=format_path(path),
            override=origin.override,
        )


def _rebuild(message, file, line, key, override) -> RecipeError:
    return RecipeError(message, file=file, line=line, key=key, override=override)


def format_path(path: KeyPath | str) -> str:
    """``("objectives", 0, "weight")`` -> ``"objectives.0.weight"``."""
    if isinstance(path, str):
        return path
    return ".".join(str(p) for p in path)


def as_path(key: KeyPath | str) -> KeyPath:
    """Turns a dotted key into a tuple path (all-digit parts become list indices).

    Tuples pass through unchanged; prefer them, since a dotted key cannot express
    mapping keys that contain dots or are digit strings.
    """
    if isinstance(key, tuple):
        return key
    if not key:
        return ()
    return tuple(int(p) if p.isdigit() else p for p in key.split("."))


def locate(positions: Mapping[KeyPath, Origin] | None, path: KeyPath) -> Origin | None:
    """The origin of ``path``, or of its closest ancestor that has one."""
    if not positions:
        return None
    for n in range(len(path), -1, -1):
        origin = positions.get(path[:n])
        if origin is not None:
            return origin
    return None


def nearest(name: str, candidates: Iterable[Any]) -> str | None:
    """The candidate closest to ``name`` (difflib), or None when nothing is close."""
    names = [str(c) for c in candidates]
    hits = difflib.get_close_matches(str(name), names, n=1, cutoff=0.6)
    if hits:
        return hits[0]
    lowered = {n.lower(): n for n in names}
    return lowered.get(str(name).lower())


def did_you_mean(name: str, candidates: Iterable[Any]) -> str:
    """``"; did you mean 'x'?"`` or an empty string."""
    hit = nearest(name, candidates)
    return f"; did you mean '{hit}'?" if hit is not None else ""


class RecipeProblems(RecipeError):
    """Several recipe problems at once (``tunevl validate``); ``str()`` has one line per problem."""

    def __init__(self, problems: list[RecipeError]):
        self.problems = list(problems)
        first = self.problems[0]
        super().__init__(first.message, file=first.file, line=first.line, key=first.key, override=first.override)

    def __str__(self) -> str:
        return "\n".join(RecipeError.__str__(p) for p in self.problems)

    def __reduce__(self):
        return (type(self), (self.problems,))
