"""Hard-negative captions by word swaps, as NegCLIP makes them (Yuksekgonul et al., ICLR 2023,
https://arxiv.org/abs/2210.01936), with the built-in tagger of :mod:`tunevl.data.tagging`.

Each candidate swaps two parts of the caption of the same kind:

* two noun phrases (``"a child holding an umbrella"`` -> ``"an umbrella holding a child"``), lower-cased
  as NegCLIP's script does;
* two singular nouns, or two plural nouns;
* two adjectives (``"a red circle and a blue square"`` -> ``"a blue circle and a red square"``);
* two relations: prepositions, or verbs (``"holding ... and petting"`` -> ``"petting ... and holding"``);
* two adverbs.

A candidate equal to the original after lower-casing and removing punctuation and whitespace is
dropped (NegCLIP's rule), as are duplicates and candidates that only exchange two phrases joined by a
conjunction (``"a cat and a dog"`` -> ``"a dog and a cat"`` means the same).
"""

from __future__ import annotations

import itertools
import random
import re

from tunevl.data.tagging import Token, tag

__all__ = ["hard_negatives", "normalise"]

_KINDS = ("noun_phrase", "noun", "plural_noun", "adjective", "relation", "adverb")


def normalise(text: str) -> str:
    """Lower case without punctuation or whitespace: two captions equal under it are the same negative."""
    return re.sub(r"[\W_]+", "", text.lower())


def _noun_phrases(tokens: list[Token]) -> list[tuple[int, int]]:
    """Token ranges ``[i, j)`` of noun phrases: DET? NUM? (ADJ|NOUN)* NOUN, longest first."""
    phrases, i = [], 0
    while i < len(tokens):
        j = i
        if tokens[j].pos == "DET":
            j += 1
        while j < len(tokens) and tokens[j].pos in ("NUM", "ADJ", "NOUN"):
            j += 1
        last = j - 1
        if last >= i and tokens[last].pos == "NOUN" and last > i - 1:
            phrases.append((i, j))
            i = j
        else:
            i += 1
    return phrases


def _conjoined(tokens: list[Token], a: tuple[int, int], b: tuple[int, int]) -> bool:
    between = tokens[a[1]:b[0]]
    return all(t.pos in ("CCONJ", "PUNCT") for t in between)


def _swap(text: str, first: tuple[int, int], second: tuple[int, int], lower: bool = False) -> str:
    """``text`` with the character spans ``first`` < ``second`` exchanged."""
    a, b = text[first[0]:first[1]], text[second[0]:second[1]]
    if lower:
        a, b = a.lower(), b.lower()
    out = text[:first[0]] + b + text[first[1]:second[0]] + a + text[second[1]:]
    if lower and first[0] == 0 and text[:1].isupper():
        out = out[:1].upper() + out[1:]
    return out


def _runs(tokens: list[Token], pos: str) -> list[tuple[int, int]]:
    """Character spans of maximal runs of ``pos`` tokens ("next to", "in front of" are one relation)."""
    spans, i = [], 0
    while i < len(tokens):
        if tokens[i].pos != pos:
            i += 1
            continue
        j = i
        while j + 1 < len(tokens) and tokens[j + 1].pos == pos:
            j += 1
        spans.append((tokens[i].start, tokens[j].end))
        i = j + 1
    return spans


def _groups(tokens: list[Token]) -> dict[str, list[list[tuple[int, int]]]]:
    """Per swappable kind, the lists of character spans that may be exchanged with each other."""
    def spans(pred):
        return [(t.start, t.end) for t in tokens if pred(t)]

    return {
        "noun": [spans(lambda t: t.pos == "NOUN" and not t.plural)],
        "plural_noun": [spans(lambda t: t.pos == "NOUN" and t.plural)],
        "adjective": [spans(lambda t: t.pos == "ADJ")],
        "relation": [_runs(tokens, "ADP"), spans(lambda t: t.pos == "VERB")],  # prepositions; verbs
        "adverb": [spans(lambda t: t.pos == "ADV")],
    }


def hard_negatives(caption: str, rng: random.Random | None = None, *, max_candidates: int | None = 5,
                   kinds: tuple[str, ...] = _KINDS, use_spacy: str | bool = "auto") -> list[str]:
    """Word-swap hard negatives of ``caption`` (see the module doc), at most ``max_candidates``.

    Args:
        caption: The true caption.
        rng: Picks which candidates to keep when there are more than ``max_candidates`` (all are
            returned, in a fixed order, when None or when there are few enough).
        max_candidates: How many to return at most; None returns every candidate.
        kinds: Which swaps to make: any of ``noun_phrase``, ``noun``, ``plural_noun``, ``adjective``,
            ``relation``, ``adverb``.
        use_spacy: As for :func:`tunevl.data.tagging.tag`.

    Returns:
        Distinct captions different from ``caption`` after :func:`normalise`; empty when nothing
        can be swapped.
    """
    unknown = set(kinds) - set(_KINDS)
    if unknown:
        raise ValueError(f"unknown swap kinds {sorted(unknown)}; choose from {list(_KINDS)}")
    tokens = tag(caption, use_spacy=use_spacy)
    candidates: list[str] = []
    same_meaning = {normalise(caption)}  # "a dog and a cat" says what "a cat and a dog" says
    for a, b in itertools.combinations(_noun_phrases(tokens), 2):
        swapped = _swap(caption, (tokens[a[0]].start, tokens[a[1] - 1].end), (tokens[b[0]].start, tokens[b[1] - 1].end),
                        lower=True)
        if _conjoined(tokens, a, b):
            same_meaning.add(normalise(swapped))
        elif "noun_phrase" in kinds:
            candidates.append(swapped)
    for kind, span_lists in _groups(tokens).items():
        if kind not in kinds:
            continue
        for spans in span_lists:
            for a, b in itertools.combinations(spans, 2):
                if caption[a[0]:a[1]].lower() != caption[b[0]:b[1]].lower():
                    candidates.append(_swap(caption, a, b))
    seen, out = same_meaning, []
    for c in candidates:
        key = normalise(c)
        if key not in seen:
            seen.add(key)
            out.append(c)
    if max_candidates is not None and len(out) > max_candidates:
        out = rng.sample(out, max_candidates) if rng is not None else out[:max_candidates]
    return out
