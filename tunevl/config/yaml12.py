"""YAML 1.2 loading with line positions, and clean dumping of resolved recipes.

YAML 1.2 core-schema semantics (via ruamel.yaml) avoid PyYAML's 1.1 traps: ``1e-4``
is a float, ``no``/``yes``/``on``/``off`` are strings, ``0o17`` is octal and ``017``
is decimal. Two deliberate departures, both to keep recipes plain data:

- timestamps (``2024-01-01``) stay strings, since the 1.2 core schema has no dates;
- only the standard tags (str, int, float, bool, null, map, seq) are accepted;
  anchors, aliases and ``<<`` merge keys work.

The loaders return plain ``dict``/``list``/scalars plus a position map from every
mapping key and sequence item path to its :class:`~tunevl.config.errors.Origin`.
"""

from __future__ import annotations

import io
import math
import pathlib
import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.representer import SafeRepresenter

from tunevl.config.errors import KeyPath, Origin, Positions, RecipeError, format_path

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}


def _yaml() -> YAML:
    return YAML(typ="safe", pure=True)


def load_yaml(path: str | pathlib.Path) -> tuple[Any, Positions]:
    """Reads a YAML file.

    Args:
        path: The file; its name (as given) is used in error messages.

    Returns:
        ``(tree, positions)``: plain data (``{}`` for an empty file) and the
        position map ``{("objectives", 0, "weight"): Origin(file, line)}``.

    Raises:
        RecipeError: unreadable file, syntax error, duplicate key, unsupported tag.
    """
    file = str(path)
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"cannot read the file: {getattr(e, 'strerror', None) or e}", file=file) from e
    return loads_yaml(text, file=file)


def loads_yaml(text: str, file: str = "<string>") -> tuple[Any, Positions]:
    """Like :func:`load_yaml`, from a string; ``file`` names it in errors."""
    tree, positions = _load(text, file)
    return ({} if tree is None else tree), positions


def parse_scalar(text: str) -> Any:
    """Parses one override value with the same YAML 1.2 rules as recipe files.

    ``"1e-4"`` -> 0.0001, ``"[1, 2]"`` -> [1, 2], ``"null"`` -> None, ``"foo"`` -> "foo",
    ``"{r: 8}"`` -> {"r": 8}, ``""`` -> None.

    Raises:
        RecipeError: the text is not valid YAML (no file or line set).
    """
    try:
        tree, _ = _load(text, None)
    except RecipeError as e:
        raise RecipeError(f"invalid YAML value {text!r}: {e.message}") from None
    return tree


def _load(text: str, file: str | None) -> tuple[Any, Positions]:
    yaml = _yaml()
    try:
        docs = list(yaml.compose_all(text))
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = e.problem or e.context or "invalid YAML"
        if e.context and e.problem:
            message = f"{e.problem} ({e.context}"
            if e.context_mark is not None and mark is not None and e.context_mark.line != mark.line:
                message += f" at line {e.context_mark.line + 1}"
            message += ")"
        raise RecipeError(message, file=file, line=mark.line + 1 if mark else None) from None
    except YAMLError as e:
        raise RecipeError(f"invalid YAML: {e}", file=file) from None
    docs = [d for d in docs if d is not None]
    if len(docs) > 1:
        raise RecipeError(
            "more than one YAML document; a recipe is a single document",
            file=file,
            line=docs[1].start_mark.line + 1,
        )
    if not docs:
        return None, {(): Origin(file, 1)}
    builder = _Builder(yaml, file)
    tree = builder.build(docs[0], (), frozenset())
    builder.positions[()] = Origin(file, docs[0].start_mark.line + 1)
    return tree, builder.positions


class _Builder:
    """Turns composed nodes into plain data while recording positions."""

    def __init__(self, yaml: YAML, file: str | None):
        self.constructor = yaml.constructor
        self.file = file
        self.positions: Positions = {}

    def error(self, node: Node, path: KeyPath, message: str) -> RecipeError:
        return RecipeError(message, file=self.file, line=node.start_mark.line + 1, key=format_path(path))

    def build(self, node: Node, path: KeyPath, active: frozenset[int]) -> Any:
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in active:
            raise self.error(node, path, "recursive alias")
        active = active | {id(node)}
        if isinstance(node, SequenceNode):
            if str(node.tag) != _TAG + "seq":
                raise self.error(node, path, f"unsupported YAML tag '{node.tag}'")
            out = []
            for i, item in enumerate(node.value):
                self.positions[path + (i,)] = Origin(self.file, item.start_mark.line + 1)
                out.append(self.build(item, path + (i,), active))
            return out
        if isinstance(node, MappingNode):
            if str(node.tag) != _TAG + "map":
                raise self.error(node, path, f"unsupported YAML tag '{node.tag}'")
            out = {}
            for key, key_node, value_node in self.entries(node, path, active):
                self.positions[path + (key,)] = Origin(self.file, key_node.start_mark.line + 1)
                out[key] = self.build(value_node, path + (key,), active)
            return out
        raise self.error(node, path, f"unsupported YAML node {type(node).__name__}")

    def entries(self, node: MappingNode, path: KeyPath, active: frozenset[int]) -> list[tuple[Any, Node, Node]]:
        """``(key, key_node, value_node)`` with ``<<`` merges applied; explicit keys win."""
        explicit: dict[Any, tuple[Node, Node]] = {}
        merged: dict[Any, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if str(key_node.tag) == _TAG + "merge":
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode) or id(source) in active:
                        raise self.error(value_node, path, "'<<' merges need a mapping or a list of mappings")
                    for key, k, v in self.entries(source, path, active | {id(source)}):
                        merged.setdefault(key, (k, v))
                continue
            key = self.key(key_node, path)
            if key in explicit:
                first = explicit[key][0].start_mark.line + 1
                raise self.error(key_node, path + (key,), f"duplicate key (first defined at line {first})")
            explicit[key] = (key_node, value_node)
        merged.update(explicit)
        return [(key, k, v) for key, (k, v) in merged.items()]

    def key(self, node: Node, path: KeyPath) -> Any:
        if not isinstance(node, ScalarNode):
            raise self.error(node, path, "mapping keys must be plain scalars")
        return self.scalar(node, path)

    def scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        tag = str(node.tag)
        if tag == _TAG + "timestamp":
            return node.value
        if tag not in _SCALAR_TAGS:
            raise self.error(node, path, f"unsupported YAML tag '{tag}'")
        try:
            return self.constructor.construct_object(node, deep=True)
        except (YAMLError, ValueError) as e:
            raise self.error(node, path, f"invalid {tag.rsplit(':', 1)[-1]} {node.value!r}: {e}") from None


# ---------------------------------------------------------------------------- dump

# Strings that YAML 1.1 readers (PyYAML, older tools) would not read back as strings.
_YAML11_AMBIGUOUS = re.compile(
    r"""^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF
        |[-+]?0[0-7_]+|[-+]?0b[01_]+|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?
        |[-+]?[0-9][0-9_]*_[0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?
        |=)$""",
    re.X,
)


class _Representer(SafeRepresenter):
    """Block mappings in insertion order, short scalar lists in flow style, no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def represent_dict(self, data: dict) -> MappingNode:
        return self.represent_mapping(_TAG + "map", list(data.items()), flow_style=not data)

    def represent_list(self, data: list) -> SequenceNode:
        flat = all(v is None or isinstance(v, (bool, int, float, str)) for v in data)
        short = flat and sum(len(str(v)) + 2 for v in data) <= 60 and not any(
            isinstance(v, str) and "\n" in v for v in data
        )
        return self.represent_sequence(_TAG + "seq", data, flow_style=short)

    def represent_float(self, data: float) -> ScalarNode:
        if math.isnan(data) or math.isinf(data):
            return super().represent_float(data)
        text = repr(data)
        if "e" in text and "." not in text:  # 1e-10 -> 1.0e-10, which YAML 1.1 readers also take as a float
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return self.represent_scalar(_TAG + "float", text)

    def represent_str(self, data: str) -> ScalarNode:
        style = "'" if _YAML11_AMBIGUOUS.match(data) else None
        return self.represent_scalar(_TAG + "str", data, style=style)


_Representer.add_representer(dict, _Representer.represent_dict)
_Representer.add_representer(list, _Representer.represent_list)
_Representer.add_representer(str, _Representer.represent_str)
_Representer.add_representer(float, _Representer.represent_float)


def dump_yaml(tree: Any) -> str:
    """Dumps plain data as readable YAML that :func:`loads_yaml` reads back equal.

    Key order is kept, mappings are block style, short scalar lists are flow style,
    and strings that YAML 1.1 tools would misread (``no``, ``on``) are quoted.
    Tuples become lists and ``pathlib`` paths become strings.

    Raises:
        TypeError: a value is not plain data (the message names its path).
    """
    yaml = _yaml()
    yaml.Representer = _Representer
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    buf = io.StringIO()
    yaml.dump(_plain(tree, ()), buf)
    return buf.getvalue()


def _plain(value: Any, path: KeyPath) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not (k is None or isinstance(k, (str, int, float, bool))):
                raise TypeError(f"cannot dump a {type(k).__name__} key at '{format_path(path)}'")
            out[k] = _plain(v, path + (k,))
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, path + (i,)) for i, v in enumerate(value)]
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if value is None:
        return None
    for kind in (bool, int, float, str):  # also unwraps subclasses such as str enums
        if isinstance(value, kind):
            return kind.__str__(value) if kind is str else kind(value)
    raise TypeError(f"cannot dump {type(value).__name__} at '{format_path(path)}'; recipes hold plain data")
