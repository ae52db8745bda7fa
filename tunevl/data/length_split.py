"""Route one caption column by token count, as VladVA splits its data (https://arxiv.org/abs/2412.04378):
captions shorter than 30 tokens feed the contrastive loss, captions of 30 to 500 tokens the next-token loss.

::

    data:
      train:
        _component_: length_split
        source: {_component_: jsonl, path: data/captions.jsonl, columns: {text: caption}}
        tokenizer: llava-hf/llava-1.5-7b-hf      # count tokens as the model does (usually model.name_or_path)

Each record's ``field`` (``text`` by default) is tokenised when the record is read and moved to ``text``
(short: ``vladva_contrastive``) or ``long_text`` (long: ``vladva_captions``); a caption longer than
``long_up_to`` tokens is dropped from its record, which then feeds neither loss.
"""

from __future__ import annotations

from typing import Any

from tunevl.errors import DataError

__all__ = ["LengthSplit", "route_caption"]


def route_caption(record: dict[str, Any], n_tokens: int | None, field: str = "text", short_below: int = 30,
                  long_up_to: int | None = 500) -> dict[str, Any]:
    """``record`` with its ``field`` (``n_tokens`` long) moved to ``text`` or ``long_text`` (or dropped when too long).

    A field the record already carries is not overwritten.
    """
    if n_tokens is None or record.get(field) is None:
        return record
    caption = record.pop(field)
    if n_tokens < short_below:
        record.setdefault("text", caption)
    elif long_up_to is None or n_tokens <= long_up_to:
        record.setdefault("long_text", caption)
    return record


class LengthSplit:
    """A data source whose records have one caption routed by its token count (see the module doc).

    Everything else (length, locations, image checks, class names) is the wrapped source's.

    Args:
        source: The data source node to read (``{_component_: jsonl, path: ...}``).
        tokenizer: The checkpoint (Hub id, folder or tunevl built-in) whose tokenizer counts the tokens.
        field: The record field holding the caption to route.
        short_below: Captions with fewer tokens go to ``text``.
        long_up_to: Captions with at most this many tokens (and at least ``short_below``) go to ``long_text``;
            longer ones are dropped. None keeps every long caption.
        revision: Revision of the tokenizer's checkpoint.
    """

    def __init__(self, source: dict, tokenizer: str, field: str = "text", short_below: int = 30,
                 long_up_to: int | None = 500, revision: str | None = None):
        if short_below < 1 or (long_up_to is not None and long_up_to < short_below):
            raise DataError(f"need 1 <= short_below <= long_up_to, got {short_below} and {long_up_to}", arg="short_below")
        self.dataset = _build_source(source)
        self.field, self.short_below, self.long_up_to = field, short_below, long_up_to
        self.tokenizer_name = tokenizer
        self.tokenizer = _load_tokenizer(tokenizer, revision)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.dataset[i]
        caption = record.get(self.field)
        n = len(self.tokenizer(caption, add_special_tokens=False)["input_ids"]) if isinstance(caption, str) else None
        return route_caption(record, n, self.field, self.short_below, self.long_up_to)

    def __getattr__(self, name: str):
        if name == "dataset":  # not yet set (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def _build_source(node) -> Any:
    from tunevl.config.check import check_component
    from tunevl.config.errors import RecipeError
    from tunevl.data import DATASETS

    try:
        fn = check_component(node, DATASETS, key="source")
    except RecipeError as err:
        raise DataError(err.message, arg="source") from None
    try:
        return fn(**{k: v for k, v in node.items() if k != "_component_"})
    except DataError as err:
        if err.arg:
            raise DataError(err.detail, arg=f"source.{err.arg}") from None
        raise


def _load_tokenizer(name: str, revision: str | None):
    from transformers import AutoTokenizer

    from tunevl.models.tiny import resolve_builtin

    try:
        return AutoTokenizer.from_pretrained(resolve_builtin(name), revision=revision)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot load the tokenizer of {name!r} ({err.__class__.__name__}: {str(err).splitlines()[0]})",
                        arg="tokenizer") from None
