"""Counterfactual counting captions: the same caption with its number swapped for another.

"Teaching CLIP to Count to Ten" (Paiss et al., ICCV 2023, https://arxiv.org/abs/2302.12066) trains on
captions whose number matches the image and contrasts each with a copy whose number is a different,
random one of two..ten. :func:`counterfactual` makes that copy:

* numbers are words (``one`` .. ``ten``, any case; the swap keeps the case) or digits (``1`` .. ``10``;
  digits stay digits);
* the new number is drawn from ``numbers`` (default two..ten) without the true one; the counted noun
  agrees with it (``"one dog"`` -> ``"four dogs"``);
* a caption gets no counterfactual when its count is unclear: no number, a number that is part of a
  compound (``"two-story house"``), a quantity or unit (``"two dozen"``, ``"3 years old"``, ``"10 am"``),
  a partitive (``"one of the three dogs"``), or several counted numbers of which none is singled out
  by the record's ``count``. Such records stay out of the counting term.

``tunevl data counterfactuals IN OUT`` writes them into a data file; the ``counting`` objective makes
them on the fly for records that carry ``count`` and no ``counterfactual``.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tunevl.data.tagging import NUMBER_WORDS, number_value, pluralise, tag

__all__ = [
    "DEFAULT_NUMBERS", "Mention", "counterfactual", "caption_count", "number_mentions", "write_counterfactuals",
]

#: The numbers a counterfactual may take (the paper's two..ten).
DEFAULT_NUMBERS: tuple[int, ...] = tuple(range(2, 11))

# A number followed by one of these is a quantity, a unit or a time, not a count of things in view.
_QUANTITIES = frozenset(
    "dozen dozens hundred hundreds thousand thousands million millions billion percent % am pm a.m p.m o'clock "
    "times th st nd rd year years yr yrs month months week weeks day days hour hours minute minutes min mins "
    "second seconds sec secs inch inches foot feet ft meter meters metre metres cm mm km mile miles kg lb lbs "
    "pound pounds ounce ounces oz gallon gallons liter liters litre litres degree degrees dollar dollars cent "
    "cents euro euros x".split())
# A number after one of these is an identifier or a rank ("number 3", "no. 5", "$10", "#1", "top 10").
_IDENTIFIERS = frozenset("number no # $ € £ top chapter page version level grade size route gate platform".split())
# What a counted noun phrase may hold between the number and its head noun.
_MODIFIERS = ("ADJ", "NOUN")


@dataclass(frozen=True)
class Mention:
    """A number in a caption: its span, value, and the span of the counted noun (None when not a count)."""

    start: int
    end: int
    value: int
    digits: bool
    noun: tuple[int, int] | None


def number_mentions(caption: str) -> tuple[list[Mention], bool]:
    """The numbers of ``caption`` and whether the caption is partitive (``"one of the ..."``, ``"two of them"``).

    Each mention carries the span of the noun it counts (the last noun of the noun phrase that
    follows it), or None when it is not a count (compound, quantity, identifier, no noun after it).
    """
    tokens = tag(caption)
    mentions, partitive = [], False
    for i, tok in enumerate(tokens):
        value = number_value(tok.text) if tok.pos in ("NUM", "NOUN", "PRON", "ADJ") else None
        if value is None:
            continue
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        prev = tokens[i - 1] if i > 0 else None
        if nxt is not None and nxt.text.lower() == "of":
            partitive = True
            continue
        noun = None
        identifier = prev is not None and (prev.text.lower() in _IDENTIFIERS or (prev.text in "#$€£" and prev.end == tok.start))
        attached = nxt is not None and nxt.start == tok.end and nxt.text in "%-/:.,"  # "10%", "3:30", "2.5"
        if not identifier and not attached and nxt is not None and nxt.text.lower().rstrip(".") not in _QUANTITIES:
            j = i + 1
            while j < len(tokens) and tokens[j].pos in _MODIFIERS:
                j += 1
            head = tokens[j - 1] if j > i + 1 else None
            if head is not None and head.pos == "NOUN":
                noun = (head.start, head.end)
        mentions.append(Mention(tok.start, tok.end, value, tok.text.isdigit(), noun))
    return mentions, partitive


def _counted(caption: str, count: int | None) -> Mention | None:
    """The one number of ``caption`` that counts something (equal to ``count`` when given), else None."""
    mentions, partitive = number_mentions(caption)
    if partitive:
        return None
    counted = [m for m in mentions if m.noun is not None and m.value >= 1]
    if count is not None:
        counted = [m for m in counted if m.value == count]
    return counted[0] if len(counted) == 1 else None


def caption_count(caption: str) -> int | None:
    """The count a caption states (``"three red circles"`` -> 3), or None when it states none clearly."""
    mention = _counted(caption, None)
    return mention.value if mention is not None else None


def _spell(value: int, like: str) -> str:
    word = NUMBER_WORDS[value]
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word.capitalize() if like[:1].isupper() else word


def counterfactual(caption: str, rng: random.Random | None = None, *, count: int | None = None,
                   numbers: Sequence[int] = DEFAULT_NUMBERS) -> str | None:
    """``caption`` with its number swapped for a different one from ``numbers``, or None (see the module doc).

    Args:
        caption: The true caption.
        rng: Source of the new number (``random.Random``); a fresh unseeded one when None.
        count: The record's count; when given, the swapped number must be the mention equal to it.
        numbers: The numbers to draw from (default two..ten; the noun is pluralised as needed, so
            ``numbers`` should not contain 1 when captions count several things).

    Returns:
        The counterfactual caption, or None when the caption has no clear count.
    """
    mention = _counted(caption, count)
    if mention is None:
        return None
    choices = [n for n in numbers if n != mention.value and 1 <= n <= 10]
    if not choices:
        return None
    new = (rng or random.Random()).choice(choices)
    original = caption[mention.start:mention.end]
    number = str(new) if mention.digits else _spell(new, original)
    start, end = mention.noun
    noun = caption[start:end]
    if mention.value == 1 and new != 1:
        noun = pluralise(noun)
    elif new == 1 and mention.value != 1:
        return None  # singularising is not supported; DEFAULT_NUMBERS never asks for it
    return caption[:mention.start] + number + caption[mention.end:start] + noun + caption[end:]


def write_counterfactuals(src: str | Path, dst: str | Path, *, text_column: str = "text", count_column: str = "count",
                          seed: int = 0, numbers: Sequence[int] = DEFAULT_NUMBERS, infer_count: bool = True) -> dict:
    """Copy a JSONL (or JSON list) or CSV/TSV data file, adding ``counterfactual`` (and ``count``) columns.

    Every row is kept with its columns as they are. A row gets a ``counterfactual`` when its caption
    states a clear count: the one in ``count_column`` when the row has it, else (with ``infer_count``)
    the number its caption states, which is then written to ``count_column`` too. The new number of
    row ``i`` is drawn from ``random.Random(f"{seed}/{i}")``, so reruns write the same file.

    Returns:
        ``{"rows", "counterfactuals", "unclear"}``: rows written, rows with a counterfactual, rows
        with a number in the caption (or a count) but no clear count (left out of the counting term).
    """
    from tunevl.errors import DataError

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DataError(f"no such file: {src}", arg="IN")
    kind = src.suffix.lower()
    if kind in (".jsonl", ".json"):
        from tunevl.data.sources.tabular import _read_json_rows

        rows, header = _read_json_rows(str(src))[0], None
    elif kind in (".csv", ".tsv"):
        delimiter = "\t" if kind == ".tsv" else ","
        with src.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            rows, header = list(reader), list(reader.fieldnames or [])
    else:
        raise DataError(f"{src}: expected a .jsonl, .json, .csv or .tsv file", arg="IN")
    stats = {"rows": len(rows), "counterfactuals": 0, "unclear": 0}
    for i, row in enumerate(rows):
        text = row.get(text_column)
        if not isinstance(text, str):
            raise DataError(f"{src}: row {i + 1}: no caption in column {text_column!r} (set --text-column)")
        given = row.get(count_column)
        if given not in (None, ""):
            try:
                count = int(float(given))
            except (TypeError, ValueError):
                raise DataError(f"{src}: row {i + 1}: {count_column}: expected an integer, got {given!r}") from None
        else:
            count = caption_count(text) if infer_count else None
        cf = counterfactual(text, random.Random(f"{seed}/{i}"), count=count, numbers=numbers) if count else None
        if cf is not None:
            row["counterfactual"] = cf
            row[count_column] = count if header is None else str(count)
            stats["counterfactuals"] += 1
        elif given not in (None, "") or number_mentions(text)[0]:
            stats["unclear"] += 1
    dst.parent.mkdir(parents=True, exist_ok=True)
    if header is None:
        with dst.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        fields = header + [c for c in (count_column, "counterfactual") if c not in header]
        with dst.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, delimiter=delimiter)
            writer.writeheader()
            writer.writerows(rows)
    return stats

