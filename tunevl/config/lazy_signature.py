"""The fields of a dataclass read from its source file, without importing its package.

``tunevl validate`` checks ``adapters.lora`` against ``peft.LoraConfig``. Importing peft
imports torch, transformers and bitsandbytes (about 5 s on a laptop CPU), which would make
validating a recipe slow. :func:`dataclass_fields` parses the dataclass definitions (and those
of its bases in the same package) with :mod:`ast` and returns a stand-in dataclass with the same
field names and annotations; nothing of the package runs. Annotations naming classes that are
not builtins or :mod:`typing` constructs become ``Any``. When the source cannot be read this
way, the real class is imported instead.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any

_NAMES = {
    "Optional": typing.Optional, "Union": typing.Union, "Literal": typing.Literal, "Any": Any,
    "List": list, "Dict": dict, "Tuple": tuple, "Set": set, "Sequence": typing.Sequence,
    "list": list, "dict": dict, "tuple": tuple, "set": set, "int": int, "float": float, "str": str,
    "bool": bool, "None": None,
}


def _annotation(node: ast.expr) -> Any:
    """Evaluate an annotation expression with typing names only; anything else is Any."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str) and not node.value.isidentifier() and "[" in node.value:
            try:
                return _annotation(ast.parse(node.value, mode="eval").body)
            except SyntaxError:
                return Any
        return node.value
    if isinstance(node, ast.Name):
        return _NAMES.get(node.id, Any)
    if isinstance(node, ast.Attribute):
        return _NAMES.get(node.attr, Any) if isinstance(node.value, ast.Name) and node.value.id == "typing" else Any
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _annotation(node.left), _annotation(node.right)
        return Any if Any in (left, right) else typing.Union[left, right]
    if isinstance(node, ast.Subscript):
        origin = _annotation(node.value)
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if origin is typing.Literal:
            return typing.Literal[tuple(i.value for i in items if isinstance(i, ast.Constant))]
        args = tuple(Ellipsis if isinstance(i, ast.Constant) and i.value is Ellipsis else _annotation(i) for i in items)
        if origin is Any:
            return Any
        if origin in (typing.Union, typing.Optional) and Any in args:
            return Any
        try:
            return origin[args if len(args) > 1 else args[0]]
        except TypeError:
            return Any
    return Any


def _classes(file: Path) -> dict[str, ast.ClassDef]:
    tree = ast.parse(file.read_text(encoding="utf-8"))
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _fields(cls: ast.ClassDef) -> list[tuple[str, Any]]:
    return [(item.target.id, _annotation(item.annotation)) for item in cls.body
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            and not (isinstance(item.annotation, ast.Subscript) and getattr(item.annotation.value, "id", "") == "ClassVar")]


@lru_cache(maxsize=None)
def dataclass_fields(package: str, module: str, name: str, bases: tuple[tuple[str, str], ...] = ()) -> type:
    """A stand-in dataclass with the fields of ``package.module.name`` (and of ``bases``, given as
    ``(module, class)`` pairs, first base first), all optional; the real class when parsing fails.

    Args:
        package: The top-level package (``peft``).
        module: The module path inside it (``tuners/lora/config``).
        name: The class (``LoraConfig``).
        bases: Base classes whose fields come first (``(("config", "PeftConfigMixin"), ("config", "PeftConfig"))``).
    """
    try:
        spec = importlib.util.find_spec(package)
        root = Path(next(iter(spec.submodule_search_locations)))
        fields: dict[str, Any] = {}
        for mod, cls in (*bases, (module, name)):
            node = _classes(root / f"{mod}.py")[cls]
            fields.update(_fields(node))
        if not fields:
            raise ValueError("no fields")
    except Exception:  # noqa: BLE001 - any surprise in the source: use the real class
        return _import(package, module, name)
    stand_in = dataclasses.make_dataclass(
        name, [(k, v, dataclasses.field(default=None)) for k, v in fields.items()]
    )
    stand_in.__qualname__ = name
    stand_in.__module__ = f"{package}.{module.replace('/', '.')}"
    return stand_in


def _import(package: str, module: str, name: str) -> type:
    import importlib

    return getattr(importlib.import_module(f"{package}.{module.replace('/', '.')}"), name)


@lru_cache(maxsize=None)
def class_names(package: str, module: str, name: str) -> frozenset[str] | None:
    """Names a class declares, read from source: annotated fields, string-valued enum members'
    values, and ``__init__`` argument names. None when the source cannot be read."""
    try:
        spec = importlib.util.find_spec(package)
        root = Path(next(iter(spec.submodule_search_locations)))
        node = _classes(root / f"{module}.py")[name]
    except Exception:  # noqa: BLE001 - no such file or class in this version
        return None
    names = {field for field, _ in _fields(node)}
    for item in node.body:
        if isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant) and isinstance(item.value.value, str):
            names.add(item.value.value)
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            args = item.args
            names.update(a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs] if a.arg != "self")
    return frozenset(names)


def dict_keys(module: str, name: str, attribute: str) -> list[str] | None:
    """The string keys of a dict literal assigned to ``attribute`` in class ``name`` of ``module``
    (a dotted module name), read from source; None when it is not written that way there."""
    try:
        origin = importlib.util.find_spec(module).origin
        node = _classes(Path(origin))[name]
    except Exception:  # noqa: BLE001
        return None
    for item in node.body:
        target = item.targets[0] if isinstance(item, ast.Assign) and len(item.targets) == 1 else getattr(item, "target", None)
        value = getattr(item, "value", None)
        if isinstance(target, ast.Name) and target.id == attribute and isinstance(value, ast.Dict):
            keys = [k.value for k in value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            return keys if len(keys) == len(value.keys) else None
    return None
