"""NegCLIP word-swap hard negatives with the built-in tagger, and the NegCLIP TSV reader on the real layout."""

from __future__ import annotations

import ast
import csv
import random

import pytest
from PIL import Image

from tunevl.data.hard_negatives import hard_negatives, normalise
from tunevl.data.tagging import tag
from tunevl.errors import DataError


def test_tagger_on_caption_words():
    pos = {t.text: t.pos for t in tag("A child holding a flowered umbrella next to the wooden table.", use_spacy=False)}
    assert pos["child"] == pos["umbrella"] == pos["table"] == "NOUN"
    assert pos["flowered"] == pos["wooden"] == "ADJ" and pos["holding"] == "VERB"
    assert pos["next"] == pos["to"] == "ADP" and pos["A"] == "DET" and pos["."] == "PUNCT"
    assert [t.plural for t in tag("two dogs and a glass", use_spacy=False) if t.pos == "NOUN"] == [True, False]


def test_each_kind_of_swap_on_negclips_example():
    caption = "A child holding a flowered umbrella and petting a yak."
    got = set(hard_negatives(caption, max_candidates=None, use_spacy=False))
    assert "A flowered umbrella holding a child and petting a yak." in got  # noun phrases
    assert "A umbrella holding a flowered child and petting a yak." in got  # nouns (NegCLIP's TSV has this one)
    assert "A child petting a flowered umbrella and holding a yak." in got  # relations (verbs)
    for kinds, want in [(("adjective",), {"The wooden plate on the white table"}),
                        (("relation",), {"A cat under the table on a rug"})]:
        source = "The white plate on the wooden table" if kinds == ("adjective",) else "A cat on the table under a rug"
        assert set(hard_negatives(source, kinds=kinds, use_spacy=False)) == want
    assert hard_negatives("A toilet in a bathroom next to a sink", kinds=("relation",), use_spacy=False) == [
        "A toilet next to a bathroom in a sink"]  # "next to" moves as one relation


def test_no_meaning_preserving_or_identical_candidates():
    assert hard_negatives("a cat and a dog", use_spacy=False) == []  # conjuncts swap to the same meaning
    assert hard_negatives("a cat", use_spacy=False) == []
    for c in hard_negatives("a dog next to a dog on the grass", max_candidates=None, use_spacy=False):
        assert normalise(c) != normalise("a dog next to a dog on the grass")
    assert normalise("A cat, on a mat!") == normalise("a cat on a mat")
    assert hard_negatives("a red circle and a blue square", use_spacy=False) == [
        "a red square and a blue circle", "a blue circle and a red square"]


def test_cap_and_seeded_choice():
    caption = "A plate of food on a wooden table next to a glass of wine"
    every = hard_negatives(caption, max_candidates=None, use_spacy=False)
    picked = hard_negatives(caption, random.Random(0), max_candidates=3, use_spacy=False)
    assert len(every) > 5 and len(picked) == 3 and set(picked) <= set(every)
    assert picked == hard_negatives(caption, random.Random(0), max_candidates=3, use_spacy=False)
    with pytest.raises(ValueError, match="unknown swap kinds"):
        hard_negatives(caption, kinds=("colour",))


def test_spacy_required_but_missing_is_an_import_error():
    pytest.importorskip("tunevl")
    try:
        import spacy  # noqa: F401
        pytest.skip("spaCy is installed here")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="spaCy"):
        tag("a cat", use_spacy=True)


# ---- NegCLIP's TSV --------------------------------------------------------------------------------

ROWS = [  # FORMATS.md section 11: unnamed pandas index first (not 0..N-1), Python-literal lists
    ("0", "A child holding a flowered umbrella and petting a yak.", "coco/val2014/a.jpg",
     "['A umbrella holding a flowered child and petting a yak .', 'A child petting a flowered umbrella and holding a yak .']",
     "[1, 2, 3]"),
    ("3", "A toilet sitting in a bathroom next to a sink.", "coco/val2014/b.jpg",
     "['A bathroom sitting in a toilet next to a sink .']", "[0, 2, 3]"),
    ("4", 'Two "big" dogs.', "coco/val2014/c.jpg", "['Two big dogs .']", "[0]"),
    ("7", "A cat.", "coco/val2014/d.jpg", "['A hat .']", "[2, 1, 0]"),
]


def _write_tsv(root, rows=ROWS):
    (root / "coco" / "val2014").mkdir(parents=True, exist_ok=True)
    for name in "abcd":
        Image.new("RGB", (8, 8)).save(root / "coco" / "val2014" / f"{name}.jpg")
    path = root / "train_neg_clip.tsv"
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["", "title", "filepath", "neg_caption", "neg_image"])
        w.writerows(rows)
    return path


def test_negclip_tsv_reads_rows_and_one_seeded_neighbour(tmp_path):
    from tunevl.data.preflight import preflight
    from tunevl.data.sources import SOURCES, detect_source

    path = _write_tsv(tmp_path)
    assert detect_source(str(path)) == "negclip_tsv"
    ds = SOURCES["negclip_tsv"](str(path))
    assert len(ds) == 4
    r = ds[2]
    assert r["text"] == 'Two "big" dogs.' and r["negatives"] == ["Two big dogs ."]
    assert r["image"].path == str(tmp_path / "coco" / "val2014" / "c.jpg")
    # Row 2's only neighbour is row 0 (a row position, not the unnamed index value).
    assert r["negative_image"].path == str(tmp_path / "coco" / "val2014" / "a.jpg")
    assert r["negative_image_text"] == ROWS[0][1] and len(r["negative_image_negatives"]) == 2
    for i in range(4):
        j = ds.neighbour(i)
        assert j in ast.literal_eval(ROWS[i][4]) and ds[i]["negative_image_text"] == ROWS[j][1]
    assert [ds.neighbour(i) for i in range(4)] == [SOURCES["negclip_tsv"](str(path)).neighbour(i) for i in range(4)]
    assert {"negative_image", "negative_image_text", "negative_image_negatives"} <= ds.fields
    preflight(ds, [])  # every image file, the neighbours' included


def test_negclip_tsv_bad_neighbour_row_names_file_and_line(tmp_path):
    from tunevl.data.sources import SOURCES
    from tunevl.errors import DataError

    rows = [*ROWS[:3], (*ROWS[3][:4], "[9]")]
    path = _write_tsv(tmp_path, rows)
    with pytest.raises(DataError, match=r"train_neg_clip.tsv:5: record 3: neg_image: row 9 is out of range: the file has rows 0..3"):
        SOURCES["negclip_tsv"](str(path))


def test_preflight_checks_the_neighbour_images_negclip_reads(tmp_path):
    from tunevl.data.preflight import preflight
    from tunevl.data.sources import SOURCES
    from tunevl.objectives import NegClip

    path = _write_tsv(tmp_path)
    (tmp_path / "coco" / "val2014" / "d.jpg").unlink()  # row 3's image, a neighbour of other rows
    ds = SOURCES["negclip_tsv"](str(path))
    with pytest.raises(DataError, match=r"records with missing or unreadable images"):
        preflight(ds, [NegClip()])
    rows = [r for r in ROWS[:3]]
    rows = [(*r[:4], "[0]") for r in rows]
    ok = SOURCES["negclip_tsv"](str(_write_tsv(tmp_path / "ok", rows)))
    preflight(ok, [NegClip()])
