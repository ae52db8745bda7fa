"""A small rule-based part-of-speech tagger for captions, with no downloaded model.

Hard-negative captions (NegCLIP), number counterfactuals and ARO's order perturbations need to know
which words are nouns, adjectives, numbers, prepositions and verbs. The official tools use spaCy's
``en_core_web_*`` models; tunevl must run offline, so :func:`tag` uses closed-class word lists
(determiners, prepositions, conjunctions, pronouns, auxiliaries), lexicons of the open-class words
captions use most (colours, sizes, materials, common verbs) and suffix rules, with a little context
(a word after a determiner and before a noun is an adjective...). It is meant for short descriptive
captions, not for general text.

When spaCy and an English model (``en_core_web_sm``, ``_md``, ``_lg`` or ``_trf``) are installed,
:func:`tag` uses them instead (``use_spacy="auto"``); the tags are mapped onto the same small set.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = ["Token", "tag", "tokenize", "pluralise", "NUMBER_WORDS", "number_value"]

#: ``NUMBER_WORDS[n]`` spells ``n`` (0..10).
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_NUMBERS = {w: i for i, w in enumerate(NUMBER_WORDS)}

_TOKEN = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


DETERMINERS = _words("a an the this that these those some each every his her its their our my your another any no "
                     "several many few both all either neither much more most such what which whose")
PREPOSITIONS = _words(
    "on in at of with under over above below beside besides near behind between into onto through across along "
    "around against by from to toward towards inside outside underneath beneath atop up down off out past among "
    "amid amidst within without upon beyond via like for about after before during throughout near next front "
    "top beside alongside opposite")
CONJUNCTIONS = _words("and or but nor yet while as so because although though whereas")
PRONOUNS = _words("i you he she it we they me him us them who whom someone something somebody anyone anything "
                  "everyone everything nobody nothing himself herself itself themselves there here")
AUXILIARIES = _words("is are was were be being been am has have had do does did can could will would may might must "
                     "should shall 's 're")
ADVERBS = _words("very too quite rather almost together away nearby here there just also still again not never "
                 "now then soon always often outside inside upstairs downstairs back forward ahead apart alone")
ADJECTIVES = _words(
    # colours and light
    "red green blue yellow purple white orange cyan black grey gray brown pink violet golden gold silver beige tan "
    "maroon navy teal turquoise dark light bright pale colorful colourful multicolored striped spotted plaid "
    # size and shape
    "big small large little tall short long huge tiny giant wide narrow thick thin round flat square rectangular "
    "oval circular triangular high low deep shallow heavy fat skinny "
    # material
    "wooden wood metal metallic plastic glass stone brick concrete leather paper cardboard ceramic steel iron "
    # state and quality
    "old young new empty full open closed clean dirty wet dry hot cold warm cool sunny cloudy snowy rainy grassy "
    "sandy rocky busy crowded happy sad cute pretty beautiful ugly fresh ripe raw cooked fried baked sliced "
    "chopped fancy plain modern antique vintage broken fake real wild domestic electric digital professional "
    "same different other many several various single double first second third last next front back left right "
    "upper lower middle main whole half male female adult baby young elderly asian african outdoor indoor "
    "furry fluffy shiny smooth rough soft hard sharp blurry dim busy quiet empty lush dense sparse")
# -ing and -ly words that are nouns (or not adverbs), and -ed words that are adjectives or nouns.
_ING_NOUNS = _words("building ceiling painting clothing king ring thing string wing evening morning sibling icing "
                    "railing frosting topping bedding awning pudding dumpling ping spring sling swing lightning "
                    "wedding meeting parking housing ceiling sing fling sapling herring nothing something anything "
                    "everything sterling stocking stuffing filling wiring siding landing crossing")
_LY_WORDS = _words("family fly belly jelly lily bully rally ally holly reply supply butterfly dragonfly assembly "
                   "italy july only early daily silly ugly lovely friendly lonely curly hilly chilly")
_ED_NOUNS = _words("bed shed sled red")
VERBS = _words(
    "sit sits stand stands hold holds ride rides play plays walk walks run runs eat eats look looks lay lays lie "
    "lies fly flies wear wears carry carries watch watches throw throws catch catches swing swings cut cuts hit hits "
    "jump jumps climb climbs drink drinks read reads pose poses wait waits talk talks use uses show shows shows "
    "hang hangs rest rests grow grows cross crosses pull pulls push pushes drive drives lean leans face faces "
    "contain contains cover covers fill fills surround surrounds feature features display displays sleep sleeps "
    "smile smiles point points reach reaches chase chases graze grazes swim swims skate skates ski skis surf surfs "
    "float floats sail sails kick kicks prepare prepares make makes take takes get gets go goes come comes see sees "
    "hug hugs kiss kisses pet pets feed feeds")
_IRREGULAR_PLURALS = {"man": "men", "woman": "women", "child": "children", "person": "people", "foot": "feet",
                      "tooth": "teeth", "mouse": "mice", "goose": "geese", "ox": "oxen", "louse": "lice",
                      "die": "dice", "sheep": "sheep", "fish": "fish", "deer": "deer", "moose": "moose",
                      "series": "series", "species": "species", "aircraft": "aircraft", "bison": "bison",
                      "cactus": "cacti", "fungus": "fungi", "knife": "knives", "leaf": "leaves", "wolf": "wolves",
                      "shelf": "shelves", "loaf": "loaves", "half": "halves", "calf": "calves", "life": "lives",
                      "wife": "wives", "thief": "thieves", "scarf": "scarves", "elf": "elves", "tomato": "tomatoes",
                      "potato": "potatoes", "hero": "heroes", "echo": "echoes", "mango": "mangoes"}
_PLURAL_NOUNS = frozenset(v for k, v in _IRREGULAR_PLURALS.items() if k != v)
_NOT_PLURAL = _words("glass grass bus gas dress cross class boss moss chess kiss mess lens canvas cactus octopus "
                     "hippopotamus virus bonus campus circus christmas news this is was has his its us yes plus "
                     "always perhaps whereas species series")


@dataclass(frozen=True)
class Token:
    """A word or punctuation mark with its character span and coarse part of speech.

    ``pos`` is one of ``NOUN ADJ VERB AUX ADV ADP DET CCONJ PRON NUM PUNCT X``; ``plural`` marks
    plural nouns (spaCy's ``NNS``).
    """

    text: str
    start: int
    end: int
    pos: str
    plural: bool = False


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """Words (hyphenated and apostrophe compounds kept whole) and punctuation marks with their spans."""
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def number_value(word: str) -> int | None:
    """0..10 for a number word (any case) or a digit string, else None."""
    low = word.lower()
    if low in _NUMBERS:
        return _NUMBERS[low]
    if low.isdigit() and len(low) <= 2:
        return int(low) if int(low) <= 10 else None
    return None


def pluralise(noun: str) -> str:
    """English plural of a noun, keeping its capitalisation (``dog`` -> ``dogs``, ``Box`` -> ``Boxes``)."""
    low = noun.lower()
    if low in _IRREGULAR_PLURALS:
        plural = _IRREGULAR_PLURALS[low]
    elif low.endswith(("s", "x", "z", "ch", "sh")):
        plural = low + "es"
    elif low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        plural = low[:-1] + "ies"
    else:
        plural = low + "s"
    if noun.isupper() and len(noun) > 1:
        return plural.upper()
    return plural[:1].upper() + plural[1:] if noun[:1].isupper() else plural


def _is_plural_form(low: str) -> bool:
    if low in _PLURAL_NOUNS:
        return True
    return low.endswith("s") and not low.endswith(("ss", "us", "is")) and low not in _NOT_PLURAL and len(low) > 2


def _word_pos(low: str) -> tuple[str, bool]:
    """Context-free guess for one lower-cased word: (pos, whether it came from a list rather than a suffix)."""
    if number_value(low) is not None:
        return "NUM", True
    for pos, words in (("DET", DETERMINERS), ("CCONJ", CONJUNCTIONS), ("PRON", PRONOUNS), ("AUX", AUXILIARIES),
                       ("ADP", PREPOSITIONS), ("ADJ", ADJECTIVES), ("VERB", VERBS), ("ADV", ADVERBS)):
        if low in words:
            return pos, True
    if low.endswith("ing") and len(low) > 4 and low not in _ING_NOUNS:
        return "VERB", False
    if low.endswith("ly") and len(low) > 3 and low not in _LY_WORDS:
        return "ADV", False
    if low.endswith("ed") and len(low) > 3 and low not in _ED_NOUNS:
        return "VERB", False  # participles: spaCy tags most of them VBN
    if low.endswith(("ful", "ous", "less", "ish", "ive", "able", "ible", "ic", "ical", "ese")) and len(low) > 4:
        return "ADJ", False
    if "-" in low:
        return "ADJ", False  # compounds before nouns: "two-story", "black-and-white"
    return "NOUN", False


_PHRASE_END = (None, "PUNCT", "ADP", "CCONJ", "VERB", "AUX", "DET", "PRON", "ADV")


def _rule_tags(text: str) -> list[Token]:
    raw = tokenize(text)
    lows = [w.lower() for w, _, _ in raw]
    guesses = [("PUNCT", True) if not re.match(r"\w", w) else _word_pos(low) for (w, _, _), low in zip(raw, lows)]
    pos = [p for p, _ in guesses]
    n = len(raw)
    for i in range(n):  # context: left to right, so a fixed tag informs the next word
        nxt = pos[i + 1] if i + 1 < n else None
        prev = pos[i - 1] if i > 0 else None
        listed = guesses[i][1]
        if pos[i] == "ADJ" and nxt in _PHRASE_END and (not listed or (lows[i] in _NOUN_ADJECTIVES and prev in ("DET", "ADJ", "NUM"))):
            pos[i] = "NOUN"  # the head of its phrase: "a wooden table", "a red square and ..."
        elif pos[i] == "VERB" and not listed and lows[i].endswith("ed") and prev in ("DET", "ADJ", "NUM") and nxt in ("NOUN", "ADJ"):
            pos[i] = "ADJ"  # "a flowered umbrella", "a stuffed bear"
        elif pos[i] == "VERB" and listed and prev in ("DET", "ADJ", "NUM"):
            pos[i] = "NOUN"  # "a swing", "the park", "two cuts"
        elif pos[i] == "ADP" and lows[i] in ("front", "top", "next") and prev == "DET":
            pos[i] = "NOUN"  # "the front of", "the top"
    return [Token(w, s, e, p, p == "NOUN" and _is_plural_form(low)) for (w, s, e), low, p in zip(raw, lows, pos)]


# Adjectives that are also nouns when they end a noun phrase.
_NOUN_ADJECTIVES = _words("square light gold silver glass stone brick metal paper leather plastic wood iron steel "
                          "adult baby male female right left back front middle half whole")


@functools.lru_cache(maxsize=1)
def _spacy_model():
    try:
        import spacy
    except ImportError:
        return None
    for name in ("en_core_web_sm", "en_core_web_md", "en_core_web_lg", "en_core_web_trf"):
        try:
            return spacy.load(name)
        except OSError:
            continue
    return None


_SPACY_POS = {"PROPN": "NOUN", "SCONJ": "CCONJ", "CONJ": "CCONJ", "PART": "ADP", "SYM": "PUNCT", "INTJ": "X",
              "SPACE": "PUNCT"}


def _spacy_tags(nlp, text: str) -> list[Token]:
    out = []
    for t in nlp(text):
        if t.is_space:
            continue
        pos = "NUM" if number_value(t.text) is not None and t.pos_ == "NUM" else _SPACY_POS.get(t.pos_, t.pos_)
        out.append(Token(t.text, t.idx, t.idx + len(t.text), pos, t.tag_ in ("NNS", "NNPS")))
    return out


def tag(text: str, use_spacy: str | bool = "auto") -> list[Token]:
    """Tokens of ``text`` with coarse parts of speech.

    Args:
        text: A caption.
        use_spacy: ``"auto"`` uses spaCy when it and an English model are installed; ``False``
            always uses the built-in rules; ``True`` requires spaCy (ImportError otherwise).
    """
    if use_spacy:
        nlp = _spacy_model()
        if nlp is not None:
            return _spacy_tags(nlp, text)
        if use_spacy is True:
            raise ImportError("use_spacy=True needs spaCy and an English model (python -m spacy download en_core_web_sm)")
    return _rule_tags(text)
