"""Data sources: native formats read exactly, column mappings, image paths, labels and class names."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from tunevl.data import DATASETS
from tunevl.data.images import ImageRef, load_image
from tunevl.data.sources import (
    CocoCaptions,
    CoopSplit,
    CsvSource,
    ImageFolder,
    JsonlSource,
    KarpathySplit,
    ParquetSource,
    SavedDataset,
    detect_source,
)
from tunevl.errors import DataError


def _png(path, colour=(200, 10, 10), size=8):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def _pixel(ref) -> tuple:
    return load_image(ref).getpixel((0, 0))


# ---------------------------------------------------------------- Karpathy / COCO, native formats


def _sentences(imgid, first_sentid, raws):
    return [{"tokens": raw.lower().strip(" .").split(), "raw": raw, "imgid": imgid, "sentid": first_sentid + k}
            for k, raw in enumerate(raws)]


def _karpathy_coco(tmp_path):
    """A three-image dataset_coco.json in the exact layout of caption_datasets.zip (FORMATS.md §9)."""
    test_caps = ["A man with a red helmet on a small moped on a dirt road. ", "Man riding a motor bike on a dirt road.",
                 "A man riding on the back of a motorcycle.", "A dirt path with a young person on a motor bike.",
                 "A man in a red shirt and a red hat is on a motorcycle.", "A sixth caption that the protocol drops."]
    data = {"images": [
        {"filepath": "val2014", "sentids": [770337 + k for k in range(6)], "filename": "COCO_val2014_000000391895.jpg",
         "imgid": 0, "split": "test", "sentences": _sentences(0, 770337, test_caps), "cocoid": 391895},
        {"filepath": "train2014", "sentids": [1, 2], "filename": "COCO_train2014_000000000009.jpg", "imgid": 1,
         "split": "train", "sentences": _sentences(1, 1, ["Closeup of bins of food.", "A meal in a lunch box."]),
         "cocoid": 9},
        {"filepath": "val2014", "sentids": [3, 4, 5], "filename": "COCO_val2014_000000000042.jpg", "imgid": 2,
         "split": "restval", "sentences": _sentences(2, 3, ["A dog.", "A brown dog.", "A dog on a rug."]),
         "cocoid": 42},
    ], "dataset": "coco"}
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(data))
    for img in data["images"]:
        _png(str(tmp_path / "coco" / img["filepath"] / img["filename"]), colour=(img["imgid"] * 50, 0, 0))
    return path, test_caps


def test_karpathy_test_split_is_one_record_per_image_with_five_captions(tmp_path):
    path, caps = _karpathy_coco(tmp_path)
    ds = DATASETS["karpathy"](str(path), split="test", image_root=str(tmp_path / "coco"))
    assert len(ds) == 1 and ds.mode == "images"
    rec = ds[0]
    assert rec["captions"] == [c.strip() for c in caps[:5]]  # the standard protocol: the first five
    assert rec["text"] == "A man with a red helmet on a small moped on a dirt road."
    assert rec["image"].path == str(tmp_path / "coco" / "val2014" / "COCO_val2014_000000391895.jpg")
    assert rec["index"] == 0 and _pixel(rec["image"]) == (0, 0, 0)
    assert KarpathySplit(str(path), split="test", image_root=str(tmp_path / "coco"), max_captions=None)[0]["captions"][5] == caps[5]


def test_karpathy_train_restval_is_one_record_per_caption(tmp_path):
    path, _ = _karpathy_coco(tmp_path)
    ds = KarpathySplit(str(path), split=["train", "restval"], image_root=str(tmp_path / "coco"))
    assert ds.mode == "pairs" and len(ds) == 5
    texts = [ds[i]["text"] for i in range(5)]
    assert texts == ["Closeup of bins of food.", "A meal in a lunch box.", "A dog.", "A brown dog.", "A dog on a rug."]
    assert os.path.basename(ds[4]["image"].path) == "COCO_val2014_000000000042.jpg"
    assert "captions" not in ds[0] and ds.fields == {"image", "text"}
    assert ds.location(3) == f"{path}: record 3 (images[2], imgid 2, caption 1)"


def test_karpathy_flickr_has_no_filepath_and_images_default_to_the_file_folder(tmp_path):
    data = {"images": [{"sentids": [0, 1, 2, 3, 4], "imgid": 0, "sentences": _sentences(0, 0, [f"c{k}" for k in range(5)]),
                        "split": "train", "filename": "1000092795.jpg"}], "dataset": "flickr30k"}
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(data))
    ds = KarpathySplit(str(tmp_path / "dataset_flickr30k.json"), split="train", mode="images")
    assert ds[0]["image"].path == str(tmp_path / "1000092795.jpg") and ds[0]["captions"] == [f"c{k}" for k in range(5)]


def test_karpathy_unknown_split_names_the_key(tmp_path):
    path, _ = _karpathy_coco(tmp_path)
    with pytest.raises(DataError) as err:
        KarpathySplit(str(path), split="tset")
    assert str(err.value) == (f"split: no images in split 'tset' in {path}; did you mean 'test'? "
                              "(splits in the file: test, train, restval)")


def _coco_captions(tmp_path):
    """captions_val2017.json in the COCO layout: info, licenses, images, annotations (interleaved)."""
    data = {
        "info": {"description": "COCO 2017 Dataset", "url": "http://cocodataset.org", "version": "1.0", "year": 2017,
                 "contributor": "COCO Consortium", "date_created": "2017/09/01"},
        "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1, "name": "Attribution"}],
        "images": [
            {"license": 1, "file_name": "000000179765.jpg", "coco_url": "http://x/000000179765.jpg", "height": 480,
             "width": 640, "date_captured": "2013-11-15 14:02:51", "flickr_url": "http://y", "id": 179765},
            {"license": 1, "file_name": "000000000139.jpg", "coco_url": "http://x/000000000139.jpg", "height": 426,
             "width": 640, "date_captured": "2013-11-21 01:34:01", "flickr_url": "http://y", "id": 139},
            {"license": 1, "file_name": "000000000001.jpg", "coco_url": "", "height": 1, "width": 1,
             "date_captured": "", "flickr_url": "", "id": 1},  # no captions: left out in images mode
        ],
        "annotations": [
            {"image_id": 179765, "id": 38, "caption": "A black Honda motorcycle parked in front of a garage."},
            {"image_id": 139, "id": 1, "caption": "A room with chairs."},
            {"image_id": 179765, "id": 182, "caption": "A Honda motorcycle parked in a grass driveway."},
            {"image_id": 139, "id": 2, "caption": "A living room. "},
        ],
    }
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "captions_val2017.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_captions_pairs_and_images(tmp_path):
    path = _coco_captions(tmp_path)
    root = tmp_path / "val2017"
    root.mkdir()
    pairs = CocoCaptions(str(path), image_root=str(root))
    assert len(pairs) == 4
    assert [pairs[i]["text"] for i in range(4)] == [
        "A black Honda motorcycle parked in front of a garage.", "A Honda motorcycle parked in a grass driveway.",
        "A room with chairs.", "A living room."]
    assert pairs[0]["image"].path == str(root / "000000179765.jpg")
    assert pairs[3]["image"].path == str(root / "000000000139.jpg")
    images = CocoCaptions(str(path), image_root=str(root), mode="images")
    assert len(images) == 2
    assert images[1]["captions"] == ["A room with chairs.", "A living room."]
    assert images.location(1) == f"{path}: record 1 (images[1], id 139)"


def test_coco_annotation_for_unknown_image(tmp_path):
    path = _coco_captions(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"].append({"image_id": 5, "id": 9, "caption": "x"})
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"captions_val2017.json: annotations\[4\]: image_id: 5 is not in images$"):
        CocoCaptions(str(path))


def test_coop_split_reads_labels_and_classnames(tmp_path):
    data = {"train": [["Abyssinian_1.jpg", 0, "abyssinian"], ["yorkshire_terrier_99.jpg", 2, "yorkshire_terrier"]],
            "val": [["basset_hound_3.jpg", 1, "basset_hound"]],
            "test": [["Abyssinian_2.jpg", 0, "abyssinian"], ["basset_hound_1.jpg", 1, "basset_hound"]]}
    path = tmp_path / "split_zhou_OxfordPets.json"
    path.write_text(json.dumps(data, indent=4))
    (tmp_path / "images").mkdir()
    ds = CoopSplit(str(path), split="test", image_root=str(tmp_path / "images"), text_template="a photo of a {}, a type of pet.")
    assert ds.classnames == ["abyssinian", "basset_hound", "yorkshire_terrier"]
    assert len(ds) == 2 and ds[1]["label"] == 1 and ds[1]["image"].path == str(tmp_path / "images" / "basset_hound_1.jpg")
    assert ds[1]["text"] == "a photo of a basset_hound, a type of pet."
    data["test"][1][2] = "basset"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"json: test\[1\]: label 1 is named 'basset' here but 'basset_hound' before"):
        CoopSplit(str(path))


# ---------------------------------------------------------------- tabular sources


def test_jsonl_paths_resolve_against_the_file_not_the_cwd(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _png(str(data / "imgs" / "a.png"), (1, 2, 3))
    _png(str(tmp_path / "elsewhere" / "b.png"), (4, 5, 6))
    rows = [{"file": "imgs/a.png", "caption": "an a"},
            {"file": str(tmp_path / "elsewhere" / "b.png"), "caption": "a b", "extra": 1}]
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    monkeypatch.chdir(tmp_path / "elsewhere")
    ds = JsonlSource(str(data / "train.jsonl"), columns={"text": "caption", "image": "file"})
    assert len(ds) == 2 and ds.fields == {"image", "text"}
    assert ds[0] == {"image": ImageRef(path=str(data / "imgs" / "a.png"), origin=f"{data / 'train.jsonl'}:1: record 0: file"),
                     "text": "an a", "index": 0}
    assert _pixel(ds[0]["image"]) == (1, 2, 3) and _pixel(ds[1]["image"]) == (4, 5, 6)
    assert "extra" not in ds[1]  # not a record field and not mapped
    rooted = JsonlSource(str(data / "train.jsonl"), columns={"text": "caption", "image": "file", "count": None},
                         image_root=str(tmp_path))
    assert rooted[0]["image"].path == str(tmp_path / "imgs" / "a.png")


def test_jsonl_labels_classnames_and_counts(tmp_path):
    rows = [{"image": "x.png", "label": "dog", "count": 2}, {"image": "y.png", "label": "cat", "count": "3"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = JsonlSource(str(tmp_path / "d.jsonl"))
    assert ds.classnames == ["cat", "dog"] and [ds[0]["label"], ds[1]["label"]] == [1, 0]
    assert [ds[0]["count"], ds[1]["count"]] == [2, 3]
    (tmp_path / "names.json").write_text(json.dumps({"classnames": ["dog", "cat", "bird"]}))
    ds = JsonlSource(str(tmp_path / "d.jsonl"), classnames=str(tmp_path / "names.json"))
    assert ds.classnames == ["dog", "cat", "bird"] and [ds[0]["label"], ds[1]["label"]] == [0, 1]
    with pytest.raises(DataError) as err:
        JsonlSource(str(tmp_path / "d.jsonl"), classnames=["dog", "bird"])
    assert str(err.value) == f"{tmp_path / 'd.jsonl'}:2: record 1: label: 'cat' is not in classnames"


def test_json_list_of_records_with_caption_lists(tmp_path):
    """BLIP/LAVIS retrieval files: a JSON list of {"image", "caption": [captions]}."""
    rows = [{"image": "val2014/COCO_val2014_000000391895.jpg", "caption": ["c1", "c2", "c3", "c4", "c5"]}]
    (tmp_path / "coco_karpathy_test.json").write_text(json.dumps(rows))
    ds = JsonlSource(str(tmp_path / "coco_karpathy_test.json"), columns={"captions": "caption"})
    assert ds[0]["captions"] == ["c1", "c2", "c3", "c4", "c5"]
    assert ds.location(0) == f"{tmp_path / 'coco_karpathy_test.json'}: record 0"


def test_csv_negclip_tsv_with_unnamed_index_and_list_literals(tmp_path):
    text = ("\ttitle\tfilepath\tneg_caption\tneg_image\n"
            "0\tA child holding a flowered umbrella.\tcoco/a.jpg\t['A umbrella holding a flowered child .']\t[2, 1, 0]\n"
            "3\tA toilet in a bathroom.\tcoco/b.jpg\t['A bathroom in a toilet .', 'x']\t[0, 1, 2]\n")
    (tmp_path / "valid_neg_clip.tsv").write_text(text)
    ds = CsvSource(str(tmp_path / "valid_neg_clip.tsv"), columns={"text": "title", "image": "filepath", "negatives": "neg_caption"})
    assert len(ds) == 2
    assert ds[1]["text"] == "A toilet in a bathroom." and ds[1]["negatives"] == ["A bathroom in a toilet .", "x"]
    assert ds[0]["image"].path == str(tmp_path / "coco" / "a.jpg") and ds.location(1) == f"{tmp_path / 'valid_neg_clip.tsv'}:3: record 1"


def test_csv_numeric_labels_are_indices(tmp_path):
    (tmp_path / "d.csv").write_text("image,label\na.png,10\nb.png,2\n")
    ds = CsvSource(str(tmp_path / "d.csv"), classnames=[f"c{k}" for k in range(11)])
    assert [ds[0]["label"], ds[1]["label"]] == [10, 2]
    (tmp_path / "e.csv").write_text("image,label\na.png,2x\nb.png,2\n")
    assert CsvSource(str(tmp_path / "e.csv")).classnames == ["2", "2x"]


def test_csv_empty_cells_are_missing(tmp_path):
    (tmp_path / "d.csv").write_text('image,text\na.png,"two\nlines"\nb.png,\n')
    ds = CsvSource(str(tmp_path / "d.csv"))
    assert ds[0]["text"] == "two\nlines" and "text" not in ds[1]
    assert ds.first_missing("text") == 1 and ds.location(1) == f"{tmp_path / 'd.csv'}:4: record 1"


def test_parquet_paths_and_string_labels(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _png(str(tmp_path / "imgs" / "0.png"), (9, 9, 9))
    table = pa.table({"jpg": ["imgs/0.png", "imgs/1.png"], "txt": ["zero", None], "label": ["b", "a"]})
    pq.write_table(table, tmp_path / "d.parquet")
    ds = ParquetSource(str(tmp_path / "d.parquet"), columns={"image": "jpg", "text": "txt"})
    assert ds.classnames == ["a", "b"] and ds[0]["label"] == 1 and ds[0]["text"] == "zero"
    assert _pixel(ds[0]["image"]) == (9, 9, 9)
    assert ds.first_missing("text") == 1 and ds.fields == {"image", "label"}
    assert list(ds.image_files()) == [(0, "image", "jpg", str(tmp_path / "imgs" / "0.png")),
                                      (1, "image", "jpg", str(tmp_path / "imgs" / "1.png"))]


def test_datasets_parquet_and_saved_folder_with_embedded_images_and_classlabel(tmp_path):
    import datasets

    images = [Image.new("RGB", (4, 4), (k * 40, 0, 0)) for k in range(3)]
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["cat", "dog"])})
    ds = datasets.Dataset.from_dict({"image": images, "text": ["a", "b", "c"], "label": [1, 0, 1]}, features=features)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": ds, "test": ds.select([2])}).save_to_disk(str(tmp_path / "dict"))
    for source in (ParquetSource(str(tmp_path / "d.parquet")), SavedDataset(str(tmp_path / "saved")),
                   SavedDataset(str(tmp_path / "dict"), split="train")):
        assert len(source) == 3 and source.classnames == ["cat", "dog"]
        rec = source[2]
        assert rec["label"] == 1 and rec["text"] == "c" and rec["image"].data is not None
        assert np.array_equal(np.asarray(load_image(rec["image"])), np.asarray(images[2]))
        assert list(source.image_files()) == []  # embedded bytes: nothing to stat
    assert SavedDataset(str(tmp_path / "dict"), split="test")[0]["text"] == "c"
    with pytest.raises(DataError, match="^split: choose one of train, test$"):
        SavedDataset(str(tmp_path / "dict"))


def test_imagefolder_classes_are_subfolders(tmp_path):
    for cls, n in (("cat", 2), ("dog", 1), ("airplanes", 1)):
        for k in range(n):
            _png(str(tmp_path / "root" / cls / f"{k}.png"))
    (tmp_path / "root" / "cat" / "notes.txt").write_text("not an image")
    ds = ImageFolder(str(tmp_path / "root"), classnames={"airplanes": "airplane"}, text_template="a photo of a {}.")
    assert ds.classnames == ["airplane", "cat", "dog"] and len(ds) == 4
    assert [ds[i]["label"] for i in range(4)] == [0, 1, 1, 2]
    assert ds[1]["image"].path == str(tmp_path / "root" / "cat" / "0.png") and ds[0]["text"] == "a photo of a airplane."
    with pytest.raises(DataError, match=r"^classnames.cats: no class folder 'cats' in .*; did you mean 'cat'\?$"):
        ImageFolder(str(tmp_path / "root"), classnames={"cats": "cat"})


def test_detect_source(tmp_path):
    path, _ = _karpathy_coco(tmp_path)
    assert detect_source(str(path)) == "karpathy"
    assert detect_source(str(_coco_captions(tmp_path))) == "coco_captions"
    (tmp_path / "a.tsv").write_text("image\n")
    assert detect_source(str(tmp_path / "a.tsv")) == "csv"
    assert detect_source(str(tmp_path / "coco")) == "imagefolder"
    with pytest.raises(DataError, match="^path: no such file or folder"):
        detect_source(str(tmp_path / "nope.jsonl"))


def test_every_source_is_registered_and_checkable_by_validate():
    from tunevl.config.check import check_component

    for name in ("jsonl", "csv", "parquet", "load_from_disk", "imagefolder", "coco_captions", "karpathy", "coop_split"):
        assert name in DATASETS
    check_component({"_component_": "karpathy", "path": "x.json", "split": ["train", "restval"], "mode": "pairs"},
                    DATASETS, key=("data", "train"))
