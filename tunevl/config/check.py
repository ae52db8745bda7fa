"""Checking recipe nodes against callables' signatures and type hints, without calling them.

One YAML node is one callable and its keys are that callable's keyword arguments.
:func:`check_call` checks a node: unknown keys (with the nearest valid name), missing
required arguments, and each value against its annotation. :func:`resolve_component`
maps a ``_component_`` string (a registered short name or a dotted import path) to the
callable, and :func:`check_component` does both for one ``_component_`` node.

Type rules (values are YAML data, so they are checked as such):

- ``bool`` is not an ``int``; an ``int`` is accepted where a ``float`` is expected.
- ``pathlib.Path`` / ``os.PathLike`` accept a ``str``; an ``Enum`` accepts a member, a
  value or a member name.
- ``list[T]``, ``Sequence[T]``, ``set[T]`` want a list (a str is never a sequence here);
  ``tuple[A, B]`` wants a list of that length, ``tuple[T, ...]`` any length;
  ``dict[K, V]`` / ``Mapping`` want a mapping.
- ``Optional``, ``Union``, ``X | None``, ``Literal``, ``Annotated`` and ``NewType`` are
  understood; a dataclass annotation accepts a mapping that is checked recursively.
- ``Annotated[int, Range(ge=1)]`` also bounds the value (:class:`Range`).
- ``Any``, unannotated and unresolvable annotations accept anything. Any other class
  accepts its instances, or a mapping with ``_component_`` (a nested node the schema
  checks on its own).

A ``_component_`` given as a dotted path must resolve to a class of the kind the node
expects (:class:`Kind`: an ``Objective`` subclass, a map-style dataset); a recipe never
names a function, a builtin or a standard-library module, so it cannot make tunevl run
arbitrary code. Resolving imports the user's module; nothing is called.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import enum
import importlib
import inspect
import os
import pathlib
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from tunevl.config.errors import KeyPath, Positions, RecipeError, as_path, did_you_mean, nearest

COMPONENT_KEY = "_component_"

_SEQUENCES = {list, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Iterable, cabc.Collection,
              cabc.Set, cabc.MutableSet}
_MAPPINGS = {dict, cabc.Mapping, cabc.MutableMapping}


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a number, as ``Annotated`` metadata: ``Annotated[int, Range(ge=1)]``.

    ``None`` (where the annotation allows it) is not checked against the bounds.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        for bound, op, ok in (("ge", ">=", lambda b: value >= b), ("gt", ">", lambda b: value > b),
                              ("le", "<=", lambda b: value <= b), ("lt", "<", lambda b: value < b)):
            limit = getattr(self, bound)
            if limit is not None and not ok(limit):
                return f"must be {op} {limit:g}, got {value!r}"
        return None


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a dotted ``_component_`` path must resolve to.

    Args:
        name: What the node is, for messages (``an Objective subclass``).
        accepts: ``accepts(cls)`` for a class; only classes are ever considered.
    """

    name: str
    accepts: Callable[[type], bool]


class _Bad(NamedTuple):
    path: KeyPath
    message: str
    deep: bool  # found inside a value whose outer shape matched (used to pick a Union member)


# ---------------------------------------------------------------------------- public API


def check_call(
    fn: Callable,
    kwargs: Mapping[str, Any],
    *,
    key: KeyPath | str,
    positions: Positions | None = None,
    file: str | None = None,
    ignore: Iterable[str] = (COMPONENT_KEY,),
    supplied: Iterable[str] = (),
    errors: list[RecipeError] | None = None,
) -> None:
    """Checks that ``fn(**kwargs)`` would bind and that every value fits its annotation.

    Nothing is called or built. Works on functions, classes (their ``__init__``) and
    dataclasses such as ``peft.LoraConfig``.

    Args:
        fn: The callable the node describes.
        kwargs: The node (a mapping from argument names to YAML values).
        key: Path of the node, as a tuple (``("objectives", 0)``, preferred) or dotted str.
        positions: Position map from the loader, for ``file:line`` in errors.
        file: Recipe file name used when a path has no recorded position.
        ignore: Keys that are not arguments (``_component_``).
        supplied: Arguments that tunevl passes itself at build time (e.g. the model):
            not required from the recipe, and an error if the recipe sets them.
        errors: When given, every problem is appended here instead of raising the first.

    Raises:
        RecipeError: The first problem (unless ``errors`` is given).
    """
    path = as_path(key)
    if not isinstance(kwargs, Mapping):
        bad = [_Bad(path, f"expected a mapping of arguments for {_callable_name(fn)}, got {describe(kwargs)}", False)]
    else:
        bad = _node_problems(fn, kwargs, path, frozenset(ignore), frozenset(supplied))
    _report(bad, positions, file, errors)


def check_value(
    value: Any,
    annotation: Any,
    *,
    key: KeyPath | str,
    positions: Positions | None = None,
    file: str | None = None,
    errors: list[RecipeError] | None = None,
) -> None:
    """Checks one value against a type annotation (same rules as :func:`check_call`)."""
    _report(_value_problems(value, annotation, as_path(key)), positions, file, errors)


def resolve_component(
    name: Any,
    registry: Mapping[str, Callable],
    *,
    key: KeyPath | str = (),
    positions: Positions | None = None,
    file: str | None = None,
    kind: Kind | None = None,
) -> Callable:
    """Returns the callable for a registered short name or a dotted import path.

    Args:
        name: ``"contrastive"`` (looked up in ``registry``) or ``"mypkg.mod.MyObjective"``
            (imported; registry names win, and a name without a dot must be registered).
        registry: Short names to callables.
        key: Path of the ``_component_`` value, for error locations.
        positions: Position map from the loader.
        file: Fallback file name.
        kind: What a dotted path must resolve to: a class that ``kind.accepts``. A path into
            the standard library or builtins is refused before anything is imported.

    Raises:
        RecipeError: Unknown name (listing the registered ones and the nearest match),
            failed import, missing attribute, or a target that is not a class of ``kind``.
    """
    path = as_path(key)

    def fail(message: str) -> RecipeError:
        return RecipeError.at(positions, path, message, file=file)

    if not isinstance(name, str) or not name:
        raise fail(f"expected a component name (str), got {describe(name)}")
    if name in registry:
        return registry[name]
    if "." not in name:
        known = ", ".join(sorted(registry)) or "none"
        raise fail(
            f"unknown component '{name}'{did_you_mean(name, registry)} "
            f"(registered: {known}; or give a dotted import path like mypkg.MyClass)"
        )
    top = name.split(".")[0]
    if kind is not None and (top in sys.stdlib_module_names or top == "builtins"):
        raise fail(f"'{name}' is in Python's standard library; {_expected(kind, registry)}")
    obj = _import_dotted(name, fail)
    if kind is not None:
        if not inspect.isclass(obj) or not kind.accepts(obj):
            what = "class" if inspect.isclass(obj) else type(obj).__name__
            raise fail(f"'{name}' is a {what} that is not {kind.name}; {_expected(kind, registry)}")
    elif not callable(obj):
        raise fail(f"'{name}' is a {type(obj).__name__}, not a callable")
    return obj


def _expected(kind: Kind, registry: Mapping[str, Callable]) -> str:
    known = ", ".join(sorted(registry)) or "none"
    return f"give a registered name ({known}) or the dotted path of {kind.name} in your own module"


def check_component(
    node: Any,
    registry: Mapping[str, Callable],
    *,
    key: KeyPath | str,
    positions: Positions | None = None,
    file: str | None = None,
    supplied: Iterable[str] = (),
    errors: list[RecipeError] | None = None,
    kind: Kind | None = None,
) -> Callable | None:
    """Resolves a ``{_component_: name, **kwargs}`` node and checks its arguments (nothing is called).

    Returns:
        The resolved callable, or None when it could not be resolved (only possible
        with ``errors`` given; otherwise the RecipeError is raised).
    """
    path = as_path(key)
    try:
        if not isinstance(node, Mapping):
            raise RecipeError.at(positions, path, f"expected a mapping with '{COMPONENT_KEY}', got {describe(node)}",
                                 file=file)
        if COMPONENT_KEY not in node:
            raise RecipeError.at(positions, path, f"missing '{COMPONENT_KEY}'", file=file)
        fn = resolve_component(node[COMPONENT_KEY], registry, key=path + (COMPONENT_KEY,), positions=positions,
                               file=file, kind=kind)
    except RecipeError as e:
        if errors is None:
            raise
        errors.append(e)
        return None
    check_call(fn, node, key=path, positions=positions, file=file, supplied=supplied, errors=errors)
    return fn


def describe(value: Any) -> str:
    """``"str 'eight'"``, ``"int 8"``, ``"None"``, ``"list [1, 2]"`` (long reprs are cut)."""
    if value is None:
        return "None"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def type_name(tp: Any) -> str:
    """A readable name for an annotation: ``int``, ``list[str], str or None``, ``one of 'a', 'b'``."""
    if tp is type(None) or tp is None:
        return "None"
    if tp is Any or tp is inspect.Parameter.empty:
        return "any value"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is not None:
        base = getattr(origin, "__name__", str(origin))
        if not args:
            return base
        return f"{base}[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if isinstance(tp, type) and issubclass(tp, pathlib.PurePath):
        return "path"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# ---------------------------------------------------------------------------- nodes


def _report(bad: list[_Bad], positions: Positions | None, file: str | None, errors: list | None) -> None:
    found = [RecipeError.at(positions, b.path, b.message, file=file) for b in bad]
    if errors is not None:
        errors.extend(found)
    elif found:
        raise found[0]


def _callable_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _node_problems(fn: Callable, kwargs: Mapping, path: KeyPath, ignore: frozenset, supplied: frozenset) -> list[_Bad]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return []  # no introspectable signature (some builtins): nothing to check against
    named = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    hints = _hints(fn, params)
    bad = []
    for name, value in kwargs.items():
        if name in ignore:
            continue
        if name in supplied:
            bad.append(_Bad(path + (name,), "set by tunevl at build time; remove it from the recipe", True))
        elif name in named:
            bad.extend(_value_problems(value, hints.get(name, Any), path + (name,), deep=True))
        elif not open_kwargs:
            bad.append(_Bad(path + (name,), _unknown_key(name, named, fn), True))
    for name, p in params.items():
        if p.default is p.empty and name not in kwargs and name not in supplied:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                bad.append(_Bad(path, f"missing required key '{name}' for {_callable_name(fn)}", True))
            elif p.kind is p.POSITIONAL_ONLY:
                bad.append(_Bad(path, f"{_callable_name(fn)} needs positional argument '{name}', "
                                      "which a recipe cannot give", True))
    return bad


def _unknown_key(name: Any, named: Mapping[str, Any], fn: Callable) -> str:
    hint = nearest(str(name), named)
    if hint is not None:
        return f"unknown key; did you mean '{hint}'?"
    names = list(named)
    shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
    return f"unknown key; {_callable_name(fn)} takes: {shown or 'no keyword arguments'}"


def _hints(fn: Callable, params: Mapping[str, inspect.Parameter]) -> dict[str, Any]:
    """Resolved annotations per parameter; unresolvable ones are left out (= Any)."""
    if isinstance(fn, type):
        init = next((c.__dict__["__init__"] for c in fn.__mro__ if "__init__" in c.__dict__), None)
        sources = [fn] if dataclasses.is_dataclass(fn) else []
        sources.append(init)
    else:
        sources = [fn]
    hints: dict[str, Any] = {}
    for src in sources:  # later sources (the __init__) win
        try:
            hints.update(typing.get_type_hints(src, include_extras=True))
        except Exception:  # noqa: BLE001 - any unresolvable name: fall back per parameter
            pass
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    globalns = getattr(inspect.unwrap(sources[-1]), "__globals__", None) or (vars(module) if module else {})
    for name, p in params.items():
        if name in hints or p.annotation is p.empty:
            continue
        if isinstance(p.annotation, str):
            try:
                hint = eval(p.annotation, dict(globalns))  # noqa: S307 - annotation text from code
                if isinstance(hint, str):  # a quoted annotation under `from __future__ import annotations`
                    hint = eval(hint, dict(globalns))  # noqa: S307
            except Exception:  # noqa: BLE001
                continue
            hints[name] = hint
        else:
            hints[name] = p.annotation
    return hints


# ---------------------------------------------------------------------------- values


def _value_problems(value: Any, tp: Any, path: KeyPath, deep: bool = False) -> list[_Bad]:
    """Problems of ``value`` against ``tp``; empty when it fits."""

    def mismatch(extra: str = "") -> list[_Bad]:
        return [_Bad(path, f"expected {type_name(tp)}, got {describe(value)}{extra}", deep)]

    if tp is Any or tp is object or tp is inspect.Parameter.empty or isinstance(tp, (str, typing.ForwardRef,
                                                                                  typing.TypeVar)):
        return []
    if tp is None or tp is type(None):
        return [] if value is None else mismatch()
    if hasattr(tp, "__supertype__"):  # NewType
        return _value_problems(value, tp.__supertype__, path, deep)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        bad = _value_problems(value, args[0], path, deep)
        for meta in tp.__metadata__:
            problem = meta.problem(value) if isinstance(meta, Range) and not bad else None
            if problem:
                bad.append(_Bad(path, problem, True))
        return bad
    if origin in (typing.Union, types.UnionType):
        return _union_problems(value, tp, args, path, deep)
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return []
        strs = [a for a in args if isinstance(a, str)]
        return mismatch(did_you_mean(value, strs) if isinstance(value, str) else "")
    if origin in (cabc.Callable, type) or tp in (cabc.Callable, typing.Callable):
        return [] if callable(value) or isinstance(value, str) else mismatch()
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            return mismatch()
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item = args[0] if args else Any
            return _items(value, [item] * len(value), path)
        if args == ((),):
            args = ()
        if len(value) != len(args):
            return mismatch(f" of length {len(value)}")
        return _items(value, list(args), path)
    if origin in _SEQUENCES or tp in _SEQUENCES:
        if not isinstance(value, (list, tuple, set, frozenset)):
            return mismatch()
        item = args[0] if args else Any
        return _items(list(value), [item] * len(value), path)
    if origin in _MAPPINGS or tp in _MAPPINGS:
        if not isinstance(value, Mapping):
            return mismatch()
        key_tp, value_tp = args if len(args) == 2 else (Any, Any)
        bad = []
        for k, v in value.items():
            for b in _value_problems(k, key_tp, path + (k,), True):
                bad.append(b._replace(message="invalid key: " + b.message))
            bad.extend(_value_problems(v, value_tp, path + (k,), True))
        return bad
    if not isinstance(tp, type):
        return []  # an exotic typing construct: accept rather than guess
    if tp is bool:
        return [] if isinstance(value, bool) else mismatch()
    if tp is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else mismatch()
    if tp is float:
        return [] if isinstance(value, (int, float)) and not isinstance(value, bool) else mismatch()
    if issubclass(tp, (pathlib.PurePath, os.PathLike)):
        return [] if isinstance(value, (str, os.PathLike)) else mismatch()
    if issubclass(tp, enum.Enum):
        by_name = isinstance(value, str) and value in tp.__members__
        if isinstance(value, tp) or by_name or any(value == m.value for m in tp):
            return []
        options = [m.value for m in tp if isinstance(m.value, str)] + list(tp.__members__)
        return mismatch(did_you_mean(value, options) if isinstance(value, str) else "")
    if isinstance(value, tp):
        return []
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return _node_problems(tp, value, path, frozenset(), frozenset())
    if isinstance(value, Mapping) and COMPONENT_KEY in value:
        return []
    return mismatch()


def _items(values: list, types_: list, path: KeyPath) -> list[_Bad]:
    bad = []
    for i, (v, t) in enumerate(zip(values, types_)):
        bad.extend(_value_problems(v, t, path + (i,), True))
    return bad


def _union_problems(value: Any, tp: Any, args: tuple, path: KeyPath, deep: bool) -> list[_Bad]:
    # Pick the member whose outer shape matched (its problems are "deep") for a precise
    # message, e.g. list[int] | None with [1, "a"] -> "x.1: expected int, got str 'a'".
    shaped = []
    for member in args:
        bad = _value_problems(value, member, path)
        if not bad:
            return []
        if bad[0].deep:
            shaped.append(bad)
    if len(shaped) == 1:
        return shaped[0]
    extra = ""
    if isinstance(value, str):
        options = [a for m in args if typing.get_origin(m) is typing.Literal for a in typing.get_args(m)]
        extra = did_you_mean(value, [o for o in options if isinstance(o, str)])
    return [_Bad(path, f"expected {type_name(tp)}, got {describe(value)}{extra}", deep)]


# ---------------------------------------------------------------------------- imports


def _import_dotted(name: str, fail: Callable[[str], RecipeError]) -> Any:
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                continue  # this prefix is not a module; try a shorter one
            raise fail(f"cannot import '{name}': {e}") from None
        except Exception as e:  # noqa: BLE001 - the module exists but failed to import
            raise fail(f"cannot import '{name}': {type(e).__name__}: {e}") from None
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                where = getattr(obj, "__name__", type(obj).__name__)
                public = [a for a in dir(obj) if not a.startswith("_")]
                raise fail(f"'{where}' has no attribute '{attr}'{did_you_mean(attr, public)}")
            obj = getattr(obj, attr)
        return obj
    raise fail(f"cannot import '{name}': no module named '{parts[0]}'")
