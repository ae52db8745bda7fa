"""Counting counterfactuals: the issue's cases, noun agreement, capitalisation, determinism, the data command."""

from __future__ import annotations

import csv
import json
import random
import re

import pytest

from tunevl.data.counterfactuals import caption_count, counterfactual, write_counterfactuals
from tunevl.data.tagging import NUMBER_WORDS, pluralise

WORDS = {w: i for i, w in enumerate(NUMBER_WORDS)}


def _all(caption, **kw):
    return {counterfactual(caption, random.Random(s), **kw) for s in range(200)}


def test_three_red_circles_swaps_the_number_and_keeps_the_plural():
    got = _all("three red circles")
    assert got == {f"{w} red circles" for w in NUMBER_WORDS[2:] if w != "three"}  # any other of two..ten


def test_one_dog_becomes_a_plural():
    got = _all("one dog")
    assert got == {f"{w} dogs" for w in NUMBER_WORDS[2:]}
    assert counterfactual("one small brown dog sitting on a bench", random.Random(0)).split()[3] == "dogs"


def test_digits_stay_digits():
    assert _all("10 cats") == {f"{n} cats" for n in range(2, 10)}


@pytest.mark.parametrize("caption", [
    "a dozen eggs", "two-story house", "one of the three dogs", "a photo of a cat", "two dozen roses",
    "a 3 year old boy", "the bus leaves at 10 am", "number 5 bus", "two of them", "two dogs and three cats",
])
def test_no_counterfactual_when_the_count_is_unclear(caption):
    assert counterfactual(caption, random.Random(0)) is None
    assert caption_count(caption) is None


def test_a_compound_number_does_not_hide_the_count():
    assert caption_count("a two-story house with three windows") == 3
    assert re.fullmatch(r"a two-story house with \w+ windows", counterfactual("a two-story house with three windows", random.Random(1)))


def test_count_selects_the_mention_and_must_match():
    assert counterfactual("two dogs and three cats", random.Random(0), count=3).startswith("two dogs and ")
    assert counterfactual("three red circles", random.Random(0), count=4) is None


def test_capitalisation_and_seeded_determinism():
    assert counterfactual("Three red circles", random.Random(0))[0].isupper()
    assert counterfactual("ONE DOG", random.Random(0)).endswith(" DOGS")
    assert counterfactual("five boxes", random.Random(7)) == counterfactual("five boxes", random.Random(7))
    assert _all("four stars", numbers=[2, 4]) == {"two stars"}


def test_pluralise_irregular_and_regular():
    assert [pluralise(w) for w in ("box", "baby", "knife", "child", "Man", "day", "dog")] == \
        ["boxes", "babies", "knives", "children", "Men", "days", "dogs"]


@pytest.mark.parametrize("ext", ["jsonl", "tsv"])
def test_data_command_writes_count_and_counterfactual(tmp_path, ext, capsys):
    from tunevl.cli import main

    rows = [{"image": "a.jpg", "text": "three red circles"}, {"image": "b.jpg", "text": "a dozen eggs"},
            {"image": "c.jpg", "text": "one dog", "count": 1}, {"image": "d.jpg", "text": "two-story house with 2 doors",
                                                                 "count": 5}]
    src = tmp_path / f"in.{ext}"
    if ext == "jsonl":
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with src.open("w", newline="") as f:
            w = csv.DictWriter(f, ["image", "text", "count"], delimiter="\t")
            w.writeheader()
            w.writerows(rows)
    out = tmp_path / f"out.{ext}"
    assert main(["data", "counterfactuals", str(src), str(out), "--seed", "3"]) == 0
    assert "2 with a counterfactual, 1 with a number but no clear count" in capsys.readouterr().out
    if ext == "jsonl":
        got = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        with out.open(newline="") as f:
            got = list(csv.DictReader(f, delimiter="\t"))
    assert [r["image"] for r in got] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]  # every row kept, in order
    assert int(got[0]["count"]) == 3 and got[0]["counterfactual"].endswith(" red circles")
    assert WORDS[got[0]["counterfactual"].split()[0]] != 3
    assert got[2]["counterfactual"].endswith(" dogs") and not got[1].get("counterfactual")
    assert not got[3].get("counterfactual")  # count 5 but the caption says 2: unclear, left alone
    again = tmp_path / f"again.{ext}"
    write_counterfactuals(src, again, seed=3)
    assert again.read_text() == out.read_text()  # seeded: reruns write the same file


def test_data_command_errors_are_one_line(tmp_path, capsys):
    from tunevl.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text('{"image": "a.jpg", "caption": "two cats"}\n')
    assert main(["data", "counterfactuals", str(src), str(tmp_path / "o.jsonl")]) == 2
    assert "row 1: no caption in column 'text' (set --text-column)" in capsys.readouterr().err
    assert main(["data", "counterfactuals", str(src), str(tmp_path / "o.jsonl"), "--text-column", "caption"]) == 0
