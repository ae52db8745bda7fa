"""few_shot: k records per class of another source (CoOp), or one half of its classes (CoCoOp's base-to-new)."""

from __future__ import annotations

import collections
import os

import pytest
from PIL import Image

import tunevl
from tunevl.cli.data import write_classification
from tunevl.config import RecipeError
from tunevl.data.fewshot import FewShot, describe_training_data, split_classes
from tunevl.data.preflight import build_dataset, preflight
from tunevl.data.synthetic import SyntheticShapes
from tunevl.errors import DataError

COUNTS = {"_component_": "synthetic_shapes", "num_samples": 300, "vary": "count"}  # 6 classes


def test_k_records_per_class_seeded_and_relabelled():
    full = SyntheticShapes(**{k: v for k, v in COUNTS.items() if k != "_component_"})
    few = FewShot(COUNTS, num_shots=4, seed=1)
    assert len(few) == 24 and few.classnames == full.classnames
    per_class = collections.Counter(few[j]["label"] for j in range(len(few)))
    assert per_class == {c: 4 for c in range(6)}
    for j in range(len(few)):  # records are the source's own, re-indexed
        rec = few[j]
        assert rec["index"] == j and rec["text"] == full.caption(few.keep[j]) and few.label_of(j) == rec["label"]
    assert FewShot(COUNTS, num_shots=4, seed=1).keep == few.keep  # the same seed draws the same records
    assert FewShot(COUNTS, num_shots=4, seed=2).keep != few.keep
    assert len(FewShot(COUNTS, num_shots=1000, seed=1)) == 300  # fewer than k in a class: all of them (CoOp)


def test_base_and_new_halves_follow_cocoop():
    assert split_classes(6) == ([0, 1, 2], [3, 4, 5]) and split_classes(5) == ([0, 1, 2], [3, 4])
    names = SyntheticShapes(vary="count").classnames
    base, new = FewShot(COUNTS, num_shots=2, classes="base"), FewShot(COUNTS, num_shots=2, classes="new")
    assert base.classnames == names[:3] and new.classnames == names[3:]
    assert sorted({new[j]["label"] for j in range(len(new))}) == [0, 1, 2]  # relabelled from 0
    assert all(new[j]["text"] == names[3 + new[j]["label"]] for j in range(len(new)))
    assert len(FewShot(COUNTS, classes="new")) == sum(1 for i in range(300) if SyntheticShapes(**{
        k: v for k, v in COUNTS.items() if k != "_component_"}).label_of(i) >= 3)


def test_recorded_for_the_bundle():
    few = FewShot(COUNTS, num_shots=2, seed=3, classes="base")
    info = describe_training_data(preflight(few))
    assert info["few_shot"] == {"num_shots": 2, "seed": 3, "classes": "base", "num_records": 6, "source_indices": few.keep}
    assert info["classnames"] == few.classnames
    assert describe_training_data(SyntheticShapes(4)) == {"classnames": SyntheticShapes(4).classnames}


def test_image_folder_source_with_preflight(tmp_path):
    write_classification(tmp_path, SyntheticShapes(num_samples=30))
    node = {"_component_": "imagefolder", "path": str(tmp_path / "images")}
    few = FewShot(node, num_shots=3, seed=0)
    assert len(few) == 9 and few.classnames == ["circle", "square", "triangle"]
    files = list(few.image_files())
    assert sorted(j for j, *_ in files) == list(range(9)) and all(os.path.isfile(p) for *_, p in files)
    victim = files[4][3]
    os.remove(victim)  # pre-flight finds it through the subset's numbering and the source's location
    with pytest.raises(DataError, match=rf"record .*{os.path.basename(victim)}.*image not found"):
        preflight(few)
    Image.new("RGB", (8, 8)).save(victim)
    assert len(preflight(few)) == 9


def test_bad_nodes_are_one_line_errors(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"image": "a.png", "text": "no label"}\n')
    with pytest.raises(DataError, match="source: the source has no classnames"):
        FewShot({"_component_": "jsonl", "path": str(tmp_path / "rows.jsonl")}, num_shots=1)
    with pytest.raises(DataError, match="num_shots: must be >= 1"):
        FewShot(COUNTS, num_shots=0)
    recipe = tunevl.load_recipe("clip/coop")  # its split file is yours to download: a located error until then
    with pytest.raises(DataError, match=r"coop\.yaml:\d+: data\.train\.source\.path: no such file or folder"):
        build_dataset(recipe, "train")
    recipe = tunevl.load_recipe("clip/coop", ["data.train.source.path=/nonexistent.json"])
    with pytest.raises(DataError, match=r"override 'data\.train\.source\.path=/nonexistent.json': data\.train\.source\.path"):
        build_dataset(recipe, "train")


def test_validate_checks_the_nested_source():
    recipe = tunevl.load_recipe("clip/coop", ["data.train.source.splt=train"])
    with pytest.raises(RecipeError, match=r"data\.train\.source\.splt: unknown key; did you mean 'split'\?"):
        recipe.validate()
    recipe = tunevl.load_recipe("clip/coop", ["data.train.classes=bases"])
    with pytest.raises(RecipeError, match=r"data\.train\.classes: expected one of 'all', 'base', 'new'"):
        recipe.validate()
