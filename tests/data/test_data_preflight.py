"""Pre-flight checks: each bad input gives one exact line naming the file, the line/record and the key."""

from __future__ import annotations

import json
import logging
import textwrap

import pytest
import torch
from PIL import Image

from tunevl.config import Recipe
from tunevl.data.preflight import FilteredDataset, build_dataset, preflight
from tunevl.data.sources import JsonlSource
from tunevl.data.synthetic import SyntheticShapes
from tunevl.errors import USER_ERRORS, DataError
from tunevl.objectives import Contrastive


def _write(tmp_path, rows, images=("0.png", "1.png", "2.png", "3.png")):
    (tmp_path / "imgs").mkdir(exist_ok=True)
    for k, name in enumerate(images):
        Image.new("RGB", (8, 8), (k * 60, 0, 0)).save(tmp_path / "imgs" / name)
    (tmp_path / "imgs" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is no image")
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(*files):
    return [{"file": f"imgs/{f}", "caption": f"caption {k}"} for k, f in enumerate(files)]


def _source(path, **kwargs):
    return JsonlSource(str(path), columns={"text": "caption", "image": "file"}, **kwargs)


def test_clean_data_passes_unchanged(tmp_path):
    ds = _source(_write(tmp_path, _rows("0.png", "1.png", "2.png")))
    assert preflight(ds, [Contrastive()]) is ds
    assert issubclass(DataError, ValueError) and DataError in USER_ERRORS


def test_missing_image_names_file_record_and_column(tmp_path):
    path = _write(tmp_path, _rows("0.png", "missing.png", "2.png"))
    with pytest.raises(DataError) as err:
        preflight(_source(path), [Contrastive()])
    assert str(err.value) == (f"{path}:2: record 1: file: image not found: {tmp_path / 'imgs' / 'missing.png'} "
                              "(to drop up to N such records instead, set data.train.max_bad_images: N)")


def test_unreadable_image_in_the_sample_is_decoded_and_reported(tmp_path):
    path = _write(tmp_path, _rows("0.png", "1.png", "bad.png"))
    with pytest.raises(DataError) as err:
        preflight(_source(path), [Contrastive()], split="eval")
    message = str(err.value)
    assert message.startswith(f"{path}:3: record 2: file: cannot read image {tmp_path / 'imgs' / 'bad.png'}: ")
    assert message.endswith("(to drop up to N such records instead, set data.eval.max_bad_images: N)")
    assert "\n" not in message


def test_empty_dataset(tmp_path):
    path = _write(tmp_path, [])
    with pytest.raises(DataError) as err:
        preflight(_source(path), [Contrastive()])
    assert str(err.value) == f"{path}: data.train: the dataset is empty"
    with pytest.raises(DataError, match="^data.eval: the dataset is empty$"):
        preflight(SyntheticShapes(num_samples=0), split="eval")


def test_objective_needs_a_field_the_data_lacks(tmp_path):
    path = _write(tmp_path, [{"file": "imgs/0.png", "title": "t"}])
    with pytest.raises(DataError) as err:
        preflight(JsonlSource(str(path), columns={"image": "file"}), [Contrastive()])
    assert str(err.value) == (f"{path}: data.train: objectives.0 (Contrastive) needs the record field 'text', which this "
                              "data does not have (fields: image); map a column to it with data.train.columns.text")


def test_objective_needs_a_field_one_record_lacks(tmp_path):
    rows = _rows("0.png", "1.png") + [{"file": "imgs/2.png"}]
    path = _write(tmp_path, rows)
    with pytest.raises(DataError) as err:
        preflight(_source(path), [Contrastive()])
    assert str(err.value) == (f"{path}:3: record 2: caption: objectives.0 (Contrastive) needs the record field 'text', "
                              "which this record lacks")


def test_column_mapping_naming_a_missing_column(tmp_path):
    path = _write(tmp_path, _rows("0.png"))
    with pytest.raises(DataError) as err:
        JsonlSource(str(path), columns={"text": "captoin"})
    assert str(err.value) == f"columns.text: no column 'captoin' in {path}; did you mean 'caption'? (columns: file, caption)"


def test_invalid_json_line(tmp_path):
    path = _write(tmp_path, _rows("0.png"))
    path.write_text(path.read_text() + '{"file": "imgs/1.png", "caption": }\n')
    with pytest.raises(DataError, match=rf"^{path}:2: invalid JSON: Expecting value"):
        _source(path)


def test_max_bad_images_drops_records_with_a_warning(tmp_path, caplog):
    path = _write(tmp_path, _rows("0.png", "missing.png", "2.png", "bad.png", "3.png"))
    with pytest.raises(DataError) as err:
        preflight(_source(path, max_bad_images=1), [Contrastive()])
    assert str(err.value) == (f"2 records with missing or unreadable images, more than data.train.max_bad_images=1; "
                              f"the first: {path}:2: record 1: file: image not found: {tmp_path / 'imgs' / 'missing.png'}")
    with caplog.at_level(logging.WARNING, logger="tunevl"):
        kept = preflight(_source(path, max_bad_images=2), [Contrastive()])
    assert isinstance(kept, FilteredDataset) and len(kept) == 3
    assert [kept[j]["text"] for j in range(3)] == ["caption 0", "caption 2", "caption 4"]
    assert [kept[j]["index"] for j in range(3)] == [0, 1, 2]  # positions in the view
    assert kept.location(2) == f"{path}:5: record 4" and kept.file == str(path)
    assert "dropping 2 record(s) with missing or unreadable images (max_bad_images=2)" in caplog.text
    # the argument overrides the source's own setting
    assert len(preflight(_source(path), [Contrastive()], max_bad_images=5)) == 3


def test_only_the_images_an_objective_needs_are_checked(tmp_path):
    rows = [dict(r, negative_image="imgs/missing.png") for r in _rows("0.png", "1.png")]
    ds = JsonlSource(str(_write(tmp_path, rows)), columns={"text": "caption", "image": "file"})
    assert preflight(ds, [Contrastive()]) is ds
    with pytest.raises(DataError, match="record 0: negative_image: image not found"):
        preflight(ds, [], split="eval")  # evaluation: every image field


def test_corrupt_image_outside_the_sample_fails_in_the_collate_with_file_and_record(tmp_path, tiny_clip_path):
    from tunevl.models import ModelConfig, load_view

    path = _write(tmp_path, _rows("0.png", "1.png", "bad.png", "3.png"))
    ds = preflight(_source(path), [Contrastive()], verify_sample=1)  # decodes record 0 only
    view = load_view(ModelConfig(name_or_path=tiny_clip_path))
    expected = f"{path}:3: record 2: file: cannot read image {tmp_path / 'imgs' / 'bad.png'}: "
    with pytest.raises(DataError) as err:
        view.collate([ds[i] for i in range(4)], {"image", "text"})
    assert str(err.value).startswith(expected)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1,
                                         collate_fn=lambda recs: view.collate(recs, {"image", "text"}))
    with pytest.raises(DataError) as err:
        next(iter(loader))
    assert str(err.value).startswith(expected) and "\n" not in str(err.value) and "Traceback" not in str(err.value)


def _recipe_file(tmp_path, model, data_node: str):
    """A recipe whose data.train node (``data_node``, one key per line) starts on line 9."""
    lines = [
        "model:", f"  name_or_path: {model}", "adapters:", "  lora: {r: 4, lora_alpha: 8, target_modules: attention}",
        "objectives:", "  - _component_: contrastive", "data:", "  train:",
        *textwrap.indent(data_node, "    ").splitlines(),
        "train:", f"  output_dir: {tmp_path / 'run'}", "  max_steps: 2", "  per_device_train_batch_size: 2",
        "  progress_bar: false",
    ]
    path = tmp_path / "recipe.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_build_dataset_locates_argument_errors_in_the_recipe(tmp_path, tiny_clip_path):
    data = _write(tmp_path, _rows("0.png", "1.png"))
    node = f"_component_: jsonl\npath: {tmp_path / 'nope.jsonl'}\ncolumns: {{text: caption, image: file}}"
    recipe_path = _recipe_file(tmp_path, tiny_clip_path, node)
    recipe = Recipe.from_file(recipe_path)
    recipe.validate()
    with pytest.raises(DataError) as err:
        build_dataset(recipe, "train", recipe.build_objectives())
    assert str(err.value) == f"{recipe_path}:10: data.train.path: no such file or folder: {tmp_path / 'nope.jsonl'}"

    node = f"_component_: jsonl\npath: {data}\ncolumns: {{text: title, image: file}}"
    recipe = Recipe.from_file(_recipe_file(tmp_path, tiny_clip_path, node))
    with pytest.raises(DataError) as err:
        build_dataset(recipe, "train", recipe.build_objectives())
    assert str(err.value) == (f"{recipe_path}:11: data.train.columns.text: no column 'title' in {data}; "
                              "did you mean 'file'? (columns: file, caption)")
    recipe = Recipe.from_file(recipe_path, ["data.train.columns.text=captoin"])
    with pytest.raises(DataError) as err:
        build_dataset(recipe, "train", recipe.build_objectives())
    assert str(err.value).startswith("override 'data.train.columns.text=captoin': data.train.columns.text: no column")

    recipe = Recipe.from_file(recipe_path, ["data.train.columns.text=caption"])
    ds = build_dataset(recipe, "train", recipe.build_objectives())
    assert len(ds) == 2 and build_dataset(recipe, "eval") is None
