"""Each benchmark reader on a small sample in its real layout, scored by a fake encoder whose similarities
are set by hand, against hand-computed metrics (ties, crops, macro exclusions, the Winoground and MMVP rules).

The fake encoder embeds an image by the colour of its top-left pixel and a text by an exact lookup, so a
reader that crops wrongly, mis-joins a path or alters a caption gets a different score (or a KeyError).
"""

from __future__ import annotations

import csv
import json
import math
import random

import pytest
import torch
from PIL import Image

from tunevl.eval.benchmarks import BENCHMARKS, build_benchmark, run_benchmarks, save_plots
from tunevl.eval.benchmarks.aro import PERTURBATIONS, pre_caption
from tunevl.eval.counting import number_captions
from tunevl.errors import DataError

D = 4


def e(*weights):
    v = torch.zeros(D)
    v[: len(weights)] = torch.tensor(weights, dtype=torch.float32)
    return v


E0, E1, E2 = e(1), e(0, 1), e(0, 0, 1)


class FakeEncoder:
    """``embed_images``: the vector of the image's top-left colour; ``embed_texts``: an exact lookup."""

    batch_size = 3  # several batches per benchmark

    def __init__(self, images: dict, texts: dict, default_text=None):
        self.images, self.texts, self.default = images, texts, default_text
        self.sizes = []

    def embed_images(self, images):
        self.sizes += [im.size for im in images]
        return torch.stack([self.images[im.getpixel((0, 0))] for im in images])

    def embed_texts(self, texts):
        return torch.stack([self.texts[t] if self.default is None else self.texts.get(t, self.default) for t in texts])


def _png(path, colour, size=(8, 8), right=None):
    """A solid image (saved as PNG whatever the name says); ``right`` colours its right half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, colour)
    if right is not None:
        im.paste(Image.new("RGB", (size[0] // 2, size[1]), right), (size[0] // 2, 0))
    im.save(path, format="PNG")


def test_every_benchmark_is_registered():
    assert {"sugarcrepe", "aro_vg_relation", "aro_vg_attribution", "aro_coco_order", "aro_flickr_order", "winoground",
            "mmvp_vlm", "countbench", "synthetic_counting", "synthetic_binding"} == set(BENCHMARKS)


def test_sugarcrepe_per_category_ties_are_wrong(tmp_path):
    coco = tmp_path / "coco" / "val2017"
    _png(coco / "000000000001.jpg", (10, 0, 0))
    (tmp_path / "data").mkdir()
    add_att = {"0": {"filename": "000000000001.jpg", "caption": "right", "negative_caption": "wrong"},
               "1": {"filename": "000000000001.jpg", "caption": "tie a", "negative_caption": "tie b"},
               "2": {"filename": "000000000001.jpg", "caption": "wrong", "negative_caption": "right"}}
    swap_obj = {"0": {"filename": "000000000001.jpg", "caption": "right", "negative_caption": "wrong"},
                "2": {"filename": "000000000001.jpg", "caption": "right", "negative_caption": "half"}}  # "1" missing
    (tmp_path / "data" / "add_att.json").write_text(json.dumps(add_att))
    (tmp_path / "data" / "swap_obj.json").write_text(json.dumps(swap_obj))
    enc = FakeEncoder({(10, 0, 0): E0}, {"right": E0, "wrong": E1, "tie a": e(1, 1), "tie b": e(1, 1), "half": e(1, 1)})
    bench = build_benchmark({"_component_": "sugarcrepe", "path": str(tmp_path / "data"), "image_root": str(coco)})
    got = run_benchmarks(enc, [bench])
    assert got["sugarcrepe/add_att"] == pytest.approx(100 / 3) and got["sugarcrepe/swap_obj"] == 100.0
    assert got["sugarcrepe/average"] == pytest.approx((100 / 3 + 100) / 2) and got["sugarcrepe/num_items"] == 5
    one = build_benchmark({"_component_": "sugarcrepe", "path": str(tmp_path / "data" / "swap_obj.json"),
                           "image_root": str(coco), "name": "sc"})
    assert run_benchmarks(enc, [one]) == {"sc/swap_obj": 100.0, "sc/average": 100.0, "sc/num_items": 2}
    with pytest.raises(DataError, match="no SugarCrepe file .*replace_rel.json"):
        build_benchmark({"_component_": "sugarcrepe", "path": str(tmp_path / "data"), "image_root": str(coco),
                         "categories": ["replace_rel"]})


def _vg(tmp_path, name, items):
    root = tmp_path / "aro"
    _png(root / "images" / "1.jpg", (1, 1, 1), right=(2, 2, 2))  # left half: colour 1, right half: colour 2
    path = root / name
    path.write_text(json.dumps(items))
    return path


def _vg_item(true, false, **extra):
    # The box is the right half: a reader that does not crop sees the left colour.
    return {"image_id": "1", "image_path": "1.jpg", "bbox_x": 4, "bbox_y": 0, "bbox_w": 4, "bbox_h": 8,
            "true_caption": true, "false_caption": false, **extra}


def test_aro_vg_relation_crops_and_drops_symmetric_relations(tmp_path):
    items = [_vg_item("t", "f", relation_name="wearing"),
             _vg_item("same", "same2", relation_name="wearing"),  # tie: np.argmax picks option 0 (false): wrong
             _vg_item("f", "t", relation_name="next to"),  # symmetric: in the accuracy, not the macro
             _vg_item("t", "f", relation_name="holding")]
    path = _vg(tmp_path, "visual_genome_relation.json", items)
    enc = FakeEncoder({(2, 2, 2): E0, (1, 1, 1): E1}, {"t": E0, "f": E1, "same": E0, "same2": E0})
    got = run_benchmarks(enc, [build_benchmark({"_component_": "aro_vg_relation", "path": str(path)})])
    assert got == {"aro_vg_relation/accuracy": 50.0, "aro_vg_relation/macro_accuracy": 75.0,
                   "aro_vg_relation/num_items": 4, "aro_vg_relation/num_relations": 2}
    assert set(enc.sizes) == {(4, 8)}  # cropped to (x, y, x + w, y + h)


def test_aro_vg_attribution_macro_over_groups_of_25(tmp_path):
    items = [_vg_item("t" if k < 20 else "f", "f" if k < 20 else "t", attributes=["white", "wooden"]) for k in range(25)]
    items += [_vg_item("t", "f", attributes=["red", "blue"]) for _ in range(3)]  # < 25 items: not in the macro
    path = _vg(tmp_path, "visual_genome_attribution.json", items)
    enc = FakeEncoder({(2, 2, 2): E0}, {"t": E0, "f": E1})
    got = run_benchmarks(enc, [build_benchmark({"_component_": "aro_vg_attribution", "path": str(path)})])
    assert got["aro_vg_attribution/macro_accuracy"] == pytest.approx(80.0)
    assert got["aro_vg_attribution/accuracy"] == pytest.approx(100 * 23 / 28) and got["aro_vg_attribution/num_groups"] == 1


def test_aro_vg_missing_image_and_key_are_one_line_errors(tmp_path):
    path = _vg(tmp_path, "visual_genome_relation.json", [{**_vg_item("t", "f", relation_name="on"), "image_path": "9.jpg"}])
    with pytest.raises(DataError, match=r"1 of 1 images not found; the first: .*item 0: .*9.jpg"):
        build_benchmark({"_component_": "aro_vg_relation", "path": str(path)})
    path.write_text(json.dumps([_vg_item("t", "f")]))
    with pytest.raises(DataError, match="item 0: missing key 'relation_name'"):
        build_benchmark({"_component_": "aro_vg_relation", "path": str(path)})


def test_pre_caption_and_the_order_perturbations():
    assert pre_caption('A Dog, "running"  on the (wet) beach!!') == "a dog, running on the wet beach"
    assert pre_caption(" ".join(["w"] * 40)) == " ".join(["w"] * 30)
    caption = "A small brown dog runs on the green grass near a big tree"
    for fn in PERTURBATIONS:
        out = fn(caption, random.Random(1))
        assert sorted(out.split()) == sorted(caption.split()) and out != caption
    nouns = PERTURBATIONS[0](caption, random.Random(1)).split()
    assert nouns[0] == "A" and nouns[4] == "runs"  # only nouns and adjectives move


def test_aro_coco_order_precision_at_1(tmp_path):
    _png(tmp_path / "val2014" / "a.jpg", (5, 5, 5))
    data = [{"image": "val2014/a.jpg", "caption": ["A dog runs on the grass.", "Two cats sit on a red sofa"]},
            {"image": "val2014/a.jpg", "caption": ["a bird"]}]
    (tmp_path / "coco_karpathy_test.json").write_text(json.dumps(data))
    default = e(1, 1)  # every shuffle: cos 0.71 with the image
    enc = FakeEncoder({(5, 5, 5): E0}, {"a dog runs on the grass": E0,  # right
                                         "two cats sit on a red sofa": E1,  # below the shuffles: wrong
                                         "a bird": default}, default_text=default)  # tied with its shuffles: option 0 wins
    bench = build_benchmark({"_component_": "aro_coco_order", "path": str(tmp_path / "coco_karpathy_test.json")})
    assert len(bench) == 3 and all(len(i["options"]) == 5 for i in bench.items)
    got = run_benchmarks(enc, [bench])
    assert got == {"aro_coco_order/precision@1": pytest.approx(200 / 3), "aro_coco_order/num_items": 3}
    again = build_benchmark({"_component_": "aro_flickr_order", "path": str(tmp_path / "coco_karpathy_test.json")})
    assert [i["options"] for i in again.items] == [i["options"] for i in bench.items]  # seeded shuffles


def test_winoground_text_image_group(tmp_path):
    s2 = math.sqrt(2)
    examples = [  # (caption 0, caption 1) vectors; images i0 = E0, i1 = E1
        (E0, E1, "Object"),  # s00 1, s01 0, s10 0, s11 1: everything right
        (e(1, 1) / s2, E1, "Relation"),  # s00 = s01 = .71 (tie: image wrong), s10 0, s11 1: text right
        # s00 .45, s01 0, s10 .64, s11 .77: c1 beats c0 on i0 (text wrong); each caption prefers its image
        (e(0.5, 0, 1) / math.sqrt(1.25), e(1, 1.2) / math.sqrt(2.44), "Object"),
    ]
    lines, texts, images = [], {}, {}
    for k, (c0, c1, tag) in enumerate(examples):
        for j in (0, 1):
            colour = (k, j, 7)
            _png(tmp_path / "images" / f"ex_{k}_img_{j}.png", colour)
            images[colour] = E0 if j == 0 else E1
        texts[f"caption {k} a"], texts[f"caption {k} b"] = c0, c1
        lines.append({"id": k, "image_0": f"ex_{k}_img_0", "image_1": f"ex_{k}_img_1", "caption_0": f"caption {k} a",
                      "caption_1": f"caption {k} b", "tag": "Noun", "secondary_tag": "", "num_main_preds": 1,
                      "collapsed_tag": tag})
    (tmp_path / "examples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    got = run_benchmarks(FakeEncoder(images, texts), [build_benchmark({"_component_": "winoground", "path": str(tmp_path)})])
    assert got["winoground/text"] == pytest.approx(200 / 3) and got["winoground/image"] == pytest.approx(200 / 3)
    assert got["winoground/group"] == pytest.approx(100 / 3) and got["winoground/num_items"] == 3
    assert got["winoground/group/Object"] == 50.0 and got["winoground/group/Relation"] == 0.0
    assert got["winoground/text/Relation"] == 100.0 and got["winoground/image/Relation"] == 0.0


def test_mmvp_vlm_pairs_categories_and_tie_rule(tmp_path):
    folder = tmp_path / "MLLM_VLM Images"  # the folder name evaluate_vlm.py opens
    rows, texts, images = [], {}, {}
    for pair in range(16):  # pairs 0..14: first category; pair 15: the second
        qtype = "Orientation" if pair < 15 else "Presence"
        a, b = 2 * pair + 1, 2 * pair + 2
        for qid, vec in ((a, E0), (b, E1)):
            _png(folder / qtype / f"{qid}.jpg", (qid, 0, 0))
            images[(qid, 0, 0)] = vec
        texts[f"a photo of statement {a}"] = e(1, 1) if pair == 3 else E0  # pair 3: a tie picks image 2: wrong
        texts[f"a photo of statement {b}"] = E1
        rows += [[a, qtype, f"statement {a}"], [b, qtype, f"statement {b}"]]
    with (tmp_path / "Questions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Question ID", "Type", "Statement"])
        w.writerows(rows)
    got = run_benchmarks(FakeEncoder(images, texts), [build_benchmark({"_component_": "mmvp_vlm", "path": str(tmp_path)})])
    assert got["mmvp_vlm/Orientation and Direction"] == pytest.approx(100 * 14 / 15)
    assert got["mmvp_vlm/Presence of Specific Features"] == 100.0
    assert got["mmvp_vlm/average"] == pytest.approx((100 * 14 / 15 + 100) / 2) and got["mmvp_vlm/num_pairs"] == 16


def test_number_captions_keep_case_and_digits():
    assert number_captions("Three red circles", 3, [2, 3]) == ["Two red circles", "Three red circles"]
    assert number_captions("We review the TEN best", 10, [9]) == ["We review the NINE best"]
    assert number_captions("10 cats and 100 dogs", 10, [4]) == ["4 cats and 100 dogs"]
    assert number_captions("a cat", 3) is None


class _NumberEncoder(FakeEncoder):
    """Texts: one-hot of the number word they contain (two..ten)."""

    WORDS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]

    def embed_texts(self, texts):
        out = torch.zeros(len(texts), 9)
        for k, t in enumerate(texts):
            out[k, next(j for j, w in enumerate(self.WORDS) if w in t.lower().split())] = 1
        return out


def test_countbench_nine_captions_confusion_and_plot(tmp_path):
    items = [{"image_url": "http://x/0.jpg", "text": "three red apples", "number": 3},
             {"image_url": "http://x/1.jpg", "text": "Ten best headsets", "number": 10},
             {"image_url": "http://x/dead.jpg", "text": "two dogs", "number": 2},  # no cached image
             {"image_url": "http://x/3.jpg", "text": "two cats", "number": 2, "image": "sub/cat.png"},
             {"image_url": "http://x/4.jpg", "text": "five birds", "number": 5}]
    (tmp_path / "CountBench.json").write_text(json.dumps(items, indent=4))
    cache = tmp_path / "cached"
    _png(cache / "0.jpg", (3, 0, 0))
    _png(cache / "1.png", (10, 0, 0))
    _png(cache / "sub" / "cat.png", (2, 0, 0))
    _png(cache / "4.jpg", (5, 0, 0))

    def onehot(*ns):
        v = torch.zeros(9)
        for n in ns:
            v[n - 2] = 1
        return v

    # Predictions: 3 right; 10 -> 7 wrong; 2 right; 5 ties with 4 -> the first (4): wrong.
    enc = _NumberEncoder({(3, 0, 0): onehot(3), (10, 0, 0): onehot(7), (2, 0, 0): onehot(2), (5, 0, 0): onehot(4, 5)}, {})
    bench = build_benchmark({"_component_": "countbench", "path": str(tmp_path / "CountBench.json"), "image_root": str(cache)})
    got = run_benchmarks(enc, [bench])
    assert got["countbench/accuracy"] == 50.0 and got["countbench/num_items"] == 4 and got["countbench/num_missing"] == 1
    confusion = got["countbench/confusion"]
    assert confusion[1][1] == 1 and confusion[8][5] == 1 and confusion[0][0] == 1 and confusion[3][2] == 1
    assert sum(map(sum, confusion)) == 4
    paths = save_plots(got, tmp_path / "out")
    assert [p.name for p in paths] == ["countbench_confusion.png"] and Image.open(paths[0]).size[0] > 100

    import pyarrow as pa
    import pyarrow.parquet as pq

    def png_bytes(colour):
        import io
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
        return buf.getvalue()

    table = pa.table({"image_url": ["u0", "u1"], "text": ["three red apples", "two dogs"], "number": [3, 2],
                      "image": [{"bytes": png_bytes((3, 0, 0)), "path": None}, None]})
    pq.write_table(table, tmp_path / "countbench.parquet")
    got = run_benchmarks(enc, [build_benchmark({"_component_": "countbench", "path": str(tmp_path / "countbench.parquet")})])
    assert got["countbench/accuracy"] == 100.0 and got["countbench/num_items"] == 1 and got["countbench/num_missing"] == 1


def test_benchmarks_run_in_eval_mode_and_restore_training(tmp_path):
    class Model(torch.nn.Module):
        pass

    class Enc(FakeEncoder):
        def embed_images(self, images):
            assert not self.model.training
            return super().embed_images(images)

    enc = Enc({}, {})
    enc.model = Model().train()
    _png(tmp_path / "c.png", (1, 0, 0))
    enc.images = {(1, 0, 0): E0}
    enc.texts = {"right": E0, "wrong": E1}
    (tmp_path / "add_obj.json").write_text(json.dumps({"0": {"filename": "c.png", "caption": "right", "negative_caption": "wrong"}}))
    got = run_benchmarks(enc, [{"_component_": "sugarcrepe", "path": str(tmp_path / "add_obj.json"), "image_root": str(tmp_path)}])
    assert got["sugarcrepe/add_obj"] == 100.0 and enc.model.training
