"""Synthetic short + long captions (the three layouts caption data arrives in) and the length split that routes one
caption column by token count (VladVA: < 30 tokens contrastive, 30-500 next-token)."""

from __future__ import annotations

import json
import random

import pytest

from tunevl.data import DATASETS
from tunevl.data.length_split import LengthSplit, route_caption
from tunevl.data.preflight import build_dataset
from tunevl.data.synthetic import COLOURS, SHAPES
from tunevl.data.synthetic_captions import SyntheticCaptions, describe
from tunevl.errors import DataError


def test_descriptions_are_long_varied_and_name_what_is_drawn():
    texts = {describe(c, col, sh, random.Random(k)) for c in (1, 3) for col in COLOURS for sh in SHAPES for k in range(6)}
    assert min(len(t.split()) for t in texts) >= 30  # >= 30 tokens under any word-piece tokenizer
    assert len(texts) > 2 * 2 * len(COLOURS) * len(SHAPES)  # phrasings vary per record
    one = describe(3, "red", "circle", random.Random(0))
    assert one.startswith("red") and "three red circles" in one.replace("three in all", "").replace("red circles, three", "three red circles")


@pytest.mark.parametrize("layout", ["both", "either", "one_column"])
def test_layouts(layout):
    ds = SyntheticCaptions(40, split="train", image_size=32, layout=layout)
    records = [ds[i] for i in range(len(ds))]
    assert [r["index"] for r in records] == list(range(40)) and ds.classnames
    assert [ds[i]["text"] if "text" in ds[i] else ds[i]["long_text"] for i in range(3)] == \
        [r.get("text", r.get("long_text")) for r in records[:3]]  # a pure function of (seed, split, index)
    has = [("text" in r, "long_text" in r) for r in records]
    if layout == "both":
        assert set(has) == {(True, True)}
    elif layout == "either":
        assert set(has) == {(True, False), (False, True)}
    else:
        assert set(has) == {(True, False)}
        lengths = {len(r["text"].split()) >= 30 for r in records}
        assert lengths == {True, False}  # one column of mixed lengths
    with pytest.raises(ValueError, match="layout"):
        SyntheticCaptions(2, layout="mixed")
    assert DATASETS["synthetic_captions"] is SyntheticCaptions


def test_route_caption():
    assert route_caption({"text": "a"}, 3) == {"text": "a"}
    assert route_caption({"text": "a b"}, 40) == {"long_text": "a b"}
    assert route_caption({"text": "long"}, 600) == {}
    assert route_caption({"text": "long"}, 600, long_up_to=None) == {"long_text": "long"}
    assert route_caption({"caption": "x", "long_text": "kept"}, 40, field="caption") == {"long_text": "kept"}
    assert route_caption({"image": 1}, None) == {"image": 1}


def test_length_split_counts_tokens_with_the_models_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from tunevl.models.tiny import resolve_builtin

    source = {"_component_": "synthetic_captions", "num_samples": 30, "image_size": 32, "layout": "one_column"}
    split = LengthSplit(source, tokenizer="tiny-llava", short_below=30, long_up_to=500)
    plain = SyntheticCaptions(30, image_size=32, layout="one_column")
    tok = AutoTokenizer.from_pretrained(resolve_builtin("tiny-llava"))
    routed = {"text": 0, "long_text": 0}
    for i in range(len(split)):
        caption, record = plain[i]["text"], split[i]
        n = len(tok(caption, add_special_tokens=False)["input_ids"])
        field = "text" if n < 30 else "long_text"
        assert record.get(field) == caption and len([f for f in ("text", "long_text") if f in record]) == 1
        routed[field] += 1
    assert routed["text"] and routed["long_text"]
    assert split.classnames == plain.classnames and len(split) == 30  # the rest is the source's
    tight = LengthSplit(source, tokenizer="tiny-llava", short_below=30, long_up_to=40)
    assert all("long_text" not in tight[i] for i in range(len(tight)))  # the descriptions are longer: dropped


def test_length_split_errors_name_the_recipe_key(tmp_path):
    import tunevl

    with pytest.raises(DataError, match="short_below"):
        LengthSplit({"_component_": "synthetic_captions"}, tokenizer="tiny-llava", short_below=50, long_up_to=10)
    data = tmp_path / "captions.jsonl"
    data.write_text(json.dumps({"image": "a.png", "caption": "x"}) + "\n")
    recipe = tunevl.load_recipe("lvlm/vladva_llava", [f"data.train.source.path={data}", "data.train.source.columns={text: nope}",
                                                      "data.train.tokenizer=tiny-llava"])
    with pytest.raises(DataError, match=r"data\.train\.source\.columns"):
        build_dataset(recipe, "train")
    recipe = tunevl.load_recipe("lvlm/vladva_llava", [f"data.train.source.path={tmp_path / 'missing.jsonl'}"])
    with pytest.raises(DataError, match=r"data\.train\.source\.path: no such file"):
        build_dataset(recipe, "train")
