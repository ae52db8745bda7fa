"""Command-line overrides for recipe trees: ``a.b=v``, ``objectives.1.weight=0.5``, ``~a.b``.

Grammar (one override per argument):

- ``a.b.c=v`` sets a value. ``v`` is parsed with the YAML 1.2 rules of the recipe files
  (``1e-4`` float, ``[1, 2]`` list, ``{r: 8}`` mapping, ``null`` None, ``foo`` str;
  quote to force a string: ``a.b='1'``). Missing mapping keys are created, and a
  ``null`` value on the way is replaced by a new mapping.
- A digit part indexes a list (``objectives.0.weight=2``). The index must exist;
  negative indices are rejected, and so is appending (set the whole list instead).
- ``a.b=`` (empty value) is an error, since it is ambiguous: write ``a.b=null`` for
  None or ``a.b=''`` for an empty string.
- ``~a.b`` deletes a key or a list item (later items shift down). It must exist.
- Setting a string on a mapping that has ``_component_`` swaps the component and keeps
  its other keys (``model=mypkg.build_model``), as in torchtune.

Every override records its provenance in the position map, so later errors about an
overridden value read ``override 'train.lr=3': ...`` instead of ``file:line``.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from tunevl.config.errors import KeyPath, Origin, Positions, RecipeError, did_you_mean, format_path
from tunevl.config.yaml12 import parse_scalar

COMPONENT_KEY = "_component_"
_PART = re.compile(r"^[^\s=~]+$")


def apply_overrides(tree: Any, overrides: list[str], positions: Positions) -> Any:
    """Applies overrides in order and returns a new tree (``tree`` is not modified).

    Args:
        tree: The loaded recipe (a mapping; None counts as empty).
        overrides: Strings like ``"train.learning_rate=3e-4"`` or ``"~eval"``.
        positions: Position map from the loader; updated in place: entries below a
            replaced or deleted value are dropped, list items after a deleted one are
            renumbered, and every set value (and its children) gets an
            ``Origin(None, None, override=text)``.

    Raises:
        RecipeError: a malformed override, a missing key or index, indexing into a
            scalar, or an invalid value; the message names the override.
    """
    tree = {} if tree is None else copy.deepcopy(tree)
    if not isinstance(tree, dict):
        raise RecipeError(f"the recipe root is a {type(tree).__name__}, not a mapping")
    for text in overrides:
        _apply_one(tree, text, positions)
    return tree


def _apply_one(tree: dict, text: str, positions: Positions) -> None:
    delete = text.startswith("~")
    if delete:
        key, raw = text[1:], None
        if "=" in key:
            raise RecipeError("a deletion '~key' takes no value", override=text)
    elif "=" not in text:
        raise RecipeError("expected 'key=value' or '~key'", override=text)
    else:
        key, raw = text.split("=", 1)
    if key.startswith("-"):
        raise RecipeError("options are not overrides; write 'key=value' without dashes", override=text)
    parts = key.split(".")
    if not all(_PART.match(p) for p in parts):
        raise RecipeError(f"malformed key {key!r}; expected dotted names like 'train.max_steps'", override=text)

    origin = Origin(None, None, override=text)
    parent, path = tree, ()
    for part in parts[:-1]:
        parent, path = _step(parent, part, path, text, positions, create=not delete)

    if delete:
        _delete(parent, parts[-1], path, text, positions)
        return
    if raw == "":
        raise RecipeError("empty value; write 'key=null' for None or \"key=''\" for an empty string", override=text)
    try:
        value = parse_scalar(raw)
    except RecipeError as e:
        raise RecipeError(e.message, key=key, override=text) from None

    slot = _slot(parent, parts[-1], path, text, must_exist=False)
    target = path + (slot,)
    current = parent.get(slot) if isinstance(parent, dict) else parent[slot]
    if isinstance(current, dict) and COMPONENT_KEY in current and isinstance(value, str):
        current[COMPONENT_KEY] = value
        positions[target + (COMPONENT_KEY,)] = origin
        return
    parent[slot] = value
    _forget(positions, target)
    positions[target] = origin
    for sub in _subpaths(value, target):
        positions[sub] = origin


def _step(node: Any, part: str, path: KeyPath, text: str, positions: Positions, *, create: bool) -> tuple[Any, KeyPath]:
    slot = _slot(node, part, path, text, must_exist=not create)
    if create and isinstance(node, dict) and (slot not in node or node[slot] is None):
        node[slot] = {}
        positions[path + (slot,)] = Origin(None, None, override=text)
    child = node[slot]
    if not isinstance(child, (dict, list)):
        raise RecipeError(
            f"cannot index into {type(child).__name__} {child!r}",
            key=format_path(path + (slot,)),
            override=text,
        )
    return child, path + (slot,)


def _slot(node: Any, part: str, path: KeyPath, text: str, *, must_exist: bool) -> Any:
    """The dict key or list index that ``part`` names inside ``node``."""
    where = format_path(path) or "the recipe root"
    if isinstance(node, list):
        if not re.fullmatch(r"-?\d+", part):
            raise RecipeError(
                f"'{where}' is a list; expected an index, got {part!r}", key=format_path(path + (part,)), override=text
            )
        index = int(part)
        if index < 0:
            raise RecipeError("negative list indices are not supported", key=format_path(path + (part,)), override=text)
        if index >= len(node):
            raise RecipeError(
                f"index {index} out of range; '{where}' has {len(node)} items (valid: 0..{len(node) - 1})"
                if node
                else f"index {index} out of range; '{where}' is empty",
                key=format_path(path + (index,)),
                override=text,
            )
        return index
    if part not in node and part.isdigit() and int(part) in node:
        return int(part)
    if must_exist and part not in node:
        raise RecipeError(f"no such key{did_you_mean(part, node)}", key=format_path(path + (part,)), override=text)
    return part


def _delete(parent: Any, part: str, path: KeyPath, text: str, positions: Positions) -> None:
    slot = _slot(parent, part, path, text, must_exist=True)
    target = path + (slot,)
    if isinstance(parent, dict):
        del parent[slot]
        _forget(positions, target)
        return
    parent.pop(slot)
    depth = len(path)
    moved = {}
    for p in list(positions):
        if len(p) > depth and p[:depth] == path and isinstance(p[depth], int) and p[depth] >= slot:
            origin = positions.pop(p)
            if p[depth] > slot:
                moved[path + (p[depth] - 1,) + p[depth + 1 :]] = origin
    positions.update(moved)


def _forget(positions: Positions, path: KeyPath) -> None:
    """Drops the positions of ``path`` and everything below it."""
    n = len(path)
    for p in [p for p in positions if len(p) >= n and p[:n] == path]:
        del positions[p]


def _subpaths(value: Any, path: KeyPath):
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        yield path + (k,)
        yield from _subpaths(v, path + (k,))
