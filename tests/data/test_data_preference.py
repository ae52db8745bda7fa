"""Preference pairs read natively (TRL's preference format in its variants, S-VCO's MVC), checked as they are read,
and the synthetic minimal-visual-contrast generator (each pair differs in exactly one attribute)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.data.test_synthetic import count_components
from tunevl.data import DATASETS
from tunevl.data.preference import PreferenceSource, dpo_conversations, normalise_preference, svco_conversations
from tunevl.data.synthetic import COLOURS, NUMBER_WORDS
from tunevl.data.synthetic_contrast import SyntheticContrast, write_mvc
from tunevl.errors import DataError

USER = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}
BLUE = {"role": "assistant", "content": [{"type": "text", "text": "It is blue."}]}
GREEN = {"role": "assistant", "content": [{"type": "text", "text": "It is green."}]}


def _image(path, colour="blue"):
    Image.new("RGB", (32, 32), COLOURS[colour]).save(path)
    return path.name


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_trl_conversational_explicit_and_implicit_prompts(tmp_path):
    image = _image(tmp_path / "a.png")
    rows = [
        {"images": [image], "prompt": [USER], "chosen": [BLUE], "rejected": [GREEN]},  # explicit (rlaif-v)
        {"images": [image], "chosen": [USER, BLUE], "rejected": [USER, GREEN]},         # implicit prompt
        {"image": image, "prompt": "What colour is it?", "chosen": "It is blue.", "rejected": "It is green."},  # plain
    ]
    src = PreferenceSource(_jsonl(tmp_path / "p.jsonl", rows))
    assert src.kind == "trl" and len(src) == 3
    want = {"prompt": [USER], "chosen": [BLUE], "rejected": [GREEN], "messages": [USER, BLUE]}
    for i in range(3):
        rec = src[i]
        assert {k: rec[k] for k in want} == want, i  # every variant reads as the same pair
        assert [str(im) for im in rec["images"]] == [str(tmp_path / image)] and rec["index"] == i
        assert "contrast_images" not in rec
    assert src.first_missing("contrast_images") == 0 and src.first_missing("images") is None


def test_implicit_prompt_and_image_placement_agree_with_trl():
    trl = pytest.importorskip("trl.data_utils")
    plain_user = {"role": "user", "content": "What colour is it?"}
    example = {"chosen": [plain_user, {"role": "assistant", "content": "It is blue."}],
               "rejected": [plain_user, {"role": "assistant", "content": "It is green."}]}
    ours = normalise_preference({**example, "images": ["x.png"]})
    theirs = trl.extract_prompt(example)
    placed = trl.prepare_multimodal_messages(theirs["prompt"] + theirs["chosen"], images=["x.png"])
    for m in placed:  # trl fills the placeholders with the images; tunevl keeps images in the record
        m["content"] = [{k: v for k, v in c.items() if k != "image"} for c in m["content"]]
    assert ours["messages"] == placed
    assert len(ours["prompt"]) == len(theirs["prompt"]) == 1


def test_mvc_read_natively_with_the_text_before_the_images(tmp_path):
    rows = [{"chosen_images": [_image(tmp_path / "w.png")], "rejected_images": [_image(tmp_path / "l.png", "green")],
             "system_prompt": "", "instruction_prompt": "Describe the image.",
             "chosen_response": "A blue square.", "rejected_response": "A green square."},
            {"chosen_images": ["w.png"], "rejected_images": ["l.png"], "system_prompt": "Be brief.",
             "instruction_prompt": "Describe the image.", "chosen_response": "Blue.", "rejected_response": "Green."}]
    path = tmp_path / "mvc_train.json"
    path.write_text(json.dumps(rows, indent=4))  # a JSON list, as divide_train_val.py writes it
    src = DATASETS["preference"](str(path))
    assert src.kind == "mvc"
    rec = src[0]
    assert rec["prompt"] == [{"role": "user", "content": [{"type": "text", "text": "Describe the image."}, {"type": "image"}]}]
    assert rec["chosen"][0]["content"][0]["text"] == "A blue square."
    assert [str(x) for x in rec["images"]] == [str(tmp_path / "w.png")]
    assert [str(x) for x in rec["contrast_images"]] == [str(tmp_path / "l.png")]
    assert src[1]["prompt"][0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}  # "" omits it

    with_image, without = svco_conversations(rec)
    assert with_image["chosen_with_rejected_image"]["images"] == rec["contrast_images"]
    assert with_image["rejected_with_chosen_image"]["messages"][-1] == rec["rejected"][0]
    for conv in without.values():  # the no-image sequences keep the text, drop every placeholder
        assert conv["images"] == [] and all(c["type"] == "text" for m in conv["messages"] for c in m["content"])
    assert [c["messages"][-1] for c in dpo_conversations(rec)] == [rec["chosen"][0], rec["rejected"][0]]


def test_a_parquet_preference_set_with_embedded_images(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    import io

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), COLOURS["red"]).save(buf, format="PNG")
    table = pa.table({"images": [[{"bytes": buf.getvalue(), "path": None}]], "prompt": [[USER]],
                      "chosen": [[BLUE]], "rejected": [[GREEN]]})
    pq.write_table(table, tmp_path / "train.parquet")
    rec = PreferenceSource(str(tmp_path / "train.parquet"))[0]
    assert rec["prompt"] == [USER] and rec["chosen"] == [BLUE]
    from tunevl.data.images import load_image

    assert load_image(rec["images"][0]).getpixel((0, 0)) == COLOURS["red"]


@pytest.mark.parametrize("row,message", [
    ({"prompt": "q", "chosen": "a"}, "needs 'rejected'"),
    ({"prompt": "q", "chosen": [BLUE], "rejected": "b"}, "both be messages or both be strings"),
    ({"chosen": "a", "rejected": "b"}, "need a 'prompt'"),
    ({"chosen": [USER, BLUE], "rejected": [GREEN]}, "ending with a user turn"),
    ({"prompt": [USER], "chosen": [USER, BLUE], "rejected": [GREEN]}, "assistant turns only"),
    ({"images": [], "prompt": [USER], "chosen": [BLUE], "rejected": [GREEN]}, "places 1 images but the pair has 0"),
    ({"prompt": [{"content": "x"}], "chosen": [BLUE], "rejected": [GREEN]}, "needs a role"),
])
def test_malformed_pairs_are_one_line_errors_naming_file_and_line(tmp_path, row, message):
    ok = {"prompt": "q", "chosen": "a", "rejected": "b"}
    path = _jsonl(tmp_path / "bad.jsonl", [ok, row])
    with pytest.raises(DataError, match=message) as err:
        PreferenceSource(path)
    assert str(err.value).startswith(f"{path}:2: record 1") and "\n" not in str(err.value)


def test_mvc_without_a_column_names_it(tmp_path):
    path = tmp_path / "mvc.json"
    path.write_text(json.dumps([{"chosen_images": [], "rejected_images": [], "instruction_prompt": "x", "chosen_response": "a"}]))
    with pytest.raises(DataError, match="no column 'rejected_response'"):
        PreferenceSource(str(path))


def _pixels(image):
    return np.asarray(image).astype(int)


def test_synthetic_contrast_pairs_differ_in_exactly_one_attribute():
    ds = SyntheticContrast(60, image_size=32, split="train")
    seen = set()
    for i in range(len(ds)):
        pair = ds.pair(i)
        kind, (a, b), (ta, tb) = pair["kind"], pair["images"], pair["responses"]
        seen.add(kind)
        wa, wb = ta.split(" "), tb.split(" ")
        assert a.size == b.size == (32, 32) and ta != tb
        if kind == "colour":  # same layout pixel for pixel, other colour: only the colour word differs
            assert [x for x, y in zip(wa, wb) if x != y] == [wa[1]] and wa[1] in COLOURS and wb[1] in COLOURS
            shape_a = (_pixels(a) == COLOURS[wa[1]]).all(-1)
            shape_b = (_pixels(b) == COLOURS[wb[1]]).all(-1)
            assert shape_a.any() and np.array_equal(shape_a, shape_b)
        elif kind == "count":  # only the count differs; each image shows its count
            assert wa[1:] != wb[1:] or wa[0] != wb[0]
            assert wa[1] == wb[1] and wa[2].rstrip("s") == wb[2].rstrip("s")
            for image, words in ((a, wa), (b, wb)):
                assert count_components(image, COLOURS[words[1]]) == NUMBER_WORDS.index(words[0])
        else:  # position: one image is the other mirrored, and the side words say so
            assert np.array_equal(_pixels(a)[:, ::-1], _pixels(b))
            assert {wa[-1], wb[-1]} == {"left", "right"} and wa[:-1] == wb[:-1]
            cols = np.nonzero((_pixels(a) == COLOURS[wa[1]]).all(-1).any(0))[0]
            assert (cols.mean() < 16) == (wa[-1] == "left")
    assert seen == {"count", "colour", "position"}
    # Which side is "chosen" is a coin flip: both orders occur.
    firsts = [ds.pair(i)["responses"][0].endswith("left") for i in range(len(ds)) if ds.pair(i)["kind"] == "position"]
    assert 0 < sum(firsts) < len(firsts)


def test_synthetic_contrast_is_deterministic_and_splits_differ():
    a, b = SyntheticContrast(8, split="train"), SyntheticContrast(8, split="train")
    c = SyntheticContrast(8, split="eval")
    assert [a[i]["chosen"] for i in range(8)] == [b[i]["chosen"] for i in range(8)]
    assert np.array_equal(_pixels(a[3]["images"][0]), _pixels(b[3]["images"][0]))
    assert [a.pair(i)["responses"] for i in range(8)] != [c.pair(i)["responses"] for i in range(8)]
    with pytest.raises(ValueError, match="kinds"):
        SyntheticContrast(4, kinds="count+size")


def test_written_mvc_reads_back_as_the_same_pairs(tmp_path, capsys):
    from tunevl.cli import main

    assert main(["data", "synth", "--kind", "contrast", "--out", str(tmp_path / "c"), "--num-samples", "6"]) == 0
    assert "_component_: preference" in capsys.readouterr().out
    rows = json.loads((tmp_path / "c" / "mvc.json").read_text())
    assert set(rows[0]) == {"chosen_images", "rejected_images", "system_prompt", "instruction_prompt",
                            "chosen_response", "rejected_response"}
    src = PreferenceSource(str(tmp_path / "c" / "mvc.json"))
    ds = SyntheticContrast(6, image_size=64)
    from tunevl.data.images import load_image

    for i in range(6):
        got, want = src[i], ds[i]
        assert {k: got[k] for k in ("prompt", "chosen", "rejected")} == {k: want[k] for k in ("prompt", "chosen", "rejected")}
        for key in ("images", "contrast_images"):
            assert np.array_equal(_pixels(load_image(got[key][0])), _pixels(want[key][0]))
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["kind"] == "contrast" and len(meta["contrast_kinds"]) == 6
    assert write_mvc(tmp_path / "d", SyntheticContrast(2)).name == "mvc.json"


def test_preflight_checks_contrast_images_and_names_missing_ones(tmp_path):
    from types import SimpleNamespace

    from tunevl.data.preflight import preflight

    path = write_mvc(tmp_path, SyntheticContrast(4))
    (tmp_path / "images" / "000002_rejected.png").unlink()
    svco = SimpleNamespace(requires=frozenset({"images", "contrast_images", "chosen", "rejected"}))
    with pytest.raises(DataError, match=r"record 2: rejected_images\[0\]: image not found"):
        preflight(PreferenceSource(str(path)), [svco])
    trl = _jsonl(tmp_path / "trl.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError, match="needs the record field 'contrast_images'"):
        preflight(PreferenceSource(trl), [svco])
