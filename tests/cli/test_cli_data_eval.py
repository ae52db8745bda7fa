"""``tunevl data`` and ``tunevl eval``: synthetic sets that load back and train, metrics, one-line errors."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

import tunevl
from tunevl.cli import main
from tunevl.data.sources import ImageFolder, JsonlSource


def _digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def test_synth_is_deterministic_and_loads_back(tmp_path, capsys):
    for out in ("a", "b"):
        assert main(["data", "synth", "--out", str(tmp_path / out), "--num-samples", "6", "--seed", "3"]) == 0
    assert "read it in a recipe with:  data.train: {_component_: jsonl" in capsys.readouterr().out
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    main(["data", "synth", "--out", str(tmp_path / "c"), "--num-samples", "6", "--seed", "4"])
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    ds = JsonlSource(str(tmp_path / "a" / "data.jsonl"), classnames=str(tmp_path / "a" / "meta.json"))
    from tunevl.data.synthetic import SyntheticShapes

    ref = SyntheticShapes(num_samples=6, seed=3)
    assert [ds[i]["text"] for i in range(6)] == ref.all_captions()
    assert [ds[i]["label"] for i in range(6)] == [ref[i]["label"] for i in range(6)]
    assert ds[5]["image"].path == str(tmp_path / "a" / "images" / "000005.png")


def test_synth_classification_layout(tmp_path):
    assert main(["data", "synth", "--kind", "classification", "--out", str(tmp_path), "--num-samples", "12"]) == 0
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["kind"] == "classification" and meta["classnames"] == ["circle", "square", "triangle"]
    ds = JsonlSource(str(tmp_path / "data.jsonl"), classnames=str(tmp_path / "meta.json"))
    folder = ImageFolder(str(tmp_path / "images"))
    assert folder.classnames == ds.classnames == meta["classnames"]
    by_path = {folder[i]["image"].path: folder[i]["label"] for i in range(len(folder))}
    assert len(by_path) == len(ds) == 12
    for i in range(12):
        rec = ds[i]
        assert by_path[rec["image"].path] == rec["label"]
        assert ds.classnames[rec["label"]] in rec["text"]  # "three red circles" is labelled circle


def test_synth_to_jsonl_source_trains(tmp_path, tiny_clip_path, quick):
    from tunevl.data.preflight import build_dataset
    from tunevl.train.loop import run

    main(["data", "synth", "--out", str(tmp_path / "data"), "--num-samples", "32"])
    main(["data", "synth", "--out", str(tmp_path / "eval"), "--num-samples", "8", "--split", "eval"])
    overrides = quick(tiny_clip_path, tmp_path / "run", steps=2, **{
        "data.train": f"{{_component_: jsonl, path: {tmp_path / 'data' / 'data.jsonl'}}}",
        "data.eval": f"{{_component_: jsonl, path: {tmp_path / 'eval' / 'data.jsonl'}}}",
    })
    recipe = tunevl.load_recipe("quickstart", overrides)
    recipe.validate()
    objectives = recipe.build_objectives()
    assert len(build_dataset(recipe, "train", objectives)) == 32
    assert main(["data", "check", "quickstart", *overrides]) == 0
    metrics, _ = run(recipe)
    assert metrics["train"]["steps"] == 2 and math.isfinite(metrics["train"]["final_loss"])
    assert metrics["trained"]["num_images"] == 8


def test_eval_cli_table_and_json_match_evaluate(tmp_path, tiny_clip_path, capsys):
    from tunevl.eval import evaluate
    from tunevl.inference import DualEncoder
    from tunevl.models import ModelConfig, load_view
    from tunevl.train.config import EvalConfig

    main(["data", "synth", "--kind", "classification", "--out", str(tmp_path / "d"), "--num-samples", "10"])
    capsys.readouterr()
    data = tmp_path / "d" / "data.jsonl"
    out = tmp_path / "m.json"
    assert main(["eval", tiny_clip_path, "--data", str(data), "--out", str(out), "--template", "a {}.",
                 "--template", "a photo of a {}."]) == 0
    table = capsys.readouterr().out
    assert "i2t_R@1" in table and "zeroshot_top1" in table and "num_classes" in table
    saved = json.loads(out.read_text())
    assert saved["data"] == f"{data} (10 records)"
    direct = evaluate(DualEncoder(load_view(ModelConfig(name_or_path=tiny_clip_path))), JsonlSource(str(data)),
                      EvalConfig(templates=["a {}.", "a photo of a {}."]))
    assert saved["metrics"] == pytest.approx(direct, abs=1e-4)
    assert main(["eval", tiny_clip_path, "--data", f"jsonl:{data}", "--no-zeroshot", "--json", "--ks", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)["metrics"]
    assert set(printed) == {"i2t_R@1", "t2i_R@1", "num_images", "num_texts"}


def test_eval_cli_reads_coco_captions_one_record_per_image(tmp_path, tiny_clip_path, capsys):
    from PIL import Image

    images = [{"license": 1, "file_name": f"{i:012d}.jpg", "coco_url": "", "height": 8, "width": 8,
               "date_captured": "", "flickr_url": "", "id": i} for i in (7, 9)]
    annotations = [{"image_id": i, "id": 10 * i + k, "caption": f"caption {k} of image {i}"} for k in range(5) for i in (7, 9)]
    (tmp_path / "captions_val2017.json").write_text(json.dumps(
        {"info": {}, "licenses": [], "images": images, "annotations": annotations}))
    (tmp_path / "val2017").mkdir()
    for img in images:
        Image.new("RGB", (8, 8), (img["id"] * 20, 0, 0)).save(tmp_path / "val2017" / img["file_name"])
    assert main(["eval", tiny_clip_path, "--data", str(tmp_path / "captions_val2017.json"),
                 "--data-arg", f"image_root={tmp_path / 'val2017'}", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["num_images"] == 2 and metrics["num_texts"] == 10
    assert metrics["t2i_R@5"] == 100.0 and metrics["i2t_R@10"] == 100.0  # k covers every candidate


def _one_line_error(capsys, argv, command) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("tunevl ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"tunevl {command}: error: ")
    return lines[0][len(f"tunevl {command}: error: "):]


def test_cli_errors_are_one_line_with_exit_2(tmp_path, tiny_clip_path, capsys, quick):
    main(["data", "synth", "--out", str(tmp_path / "d"), "--num-samples", "4"])
    data = tmp_path / "d" / "data.jsonl"
    capsys.readouterr()
    missing = tmp_path / "nope.jsonl"
    assert _one_line_error(capsys, ["eval", tiny_clip_path, "--data", str(missing)], "eval") == \
        f"--data: no such file or folder: {missing}"
    assert _one_line_error(capsys, ["eval", tiny_clip_path, "--data", str(data), "--data-arg", "columns={text: caption}"],
                           "eval") == f"--data.columns.text: no column 'caption' in {data} (columns: image, text, count, label)"
    (tmp_path / "d" / "images" / "000002.png").unlink()
    message = _one_line_error(capsys, ["eval", tiny_clip_path, "--data", str(data)], "eval")
    assert message == (f"{data}:3: record 2: image: image not found: {tmp_path / 'd' / 'images' / '000002.png'} "
                       "(to drop up to N such records instead, set data.eval.max_bad_images: N)")
    assert main(["eval", tiny_clip_path, "--data", str(data), "--data-arg", "max_bad_images=1", "--no-zeroshot"]) == 0

    (tmp_path / "empty.jsonl").write_text("")
    base = quick(tiny_clip_path, tmp_path / "run") + ["~data.eval"]
    overrides = base + [f"data.train={{_component_: jsonl, path: {tmp_path / 'empty.jsonl'}}}"]
    assert _one_line_error(capsys, ["data", "check", "quickstart", *overrides], "data") == \
        f"{tmp_path / 'empty.jsonl'}: data.train: the dataset is empty"
    overrides = base + [f"data.train={{_component_: jsonl, path: {data}, columns: {{text: null}}}}"]
    assert _one_line_error(capsys, ["data", "check", "quickstart", *overrides], "data") == (
        f"{data}: data.train: objectives.0 (Contrastive) needs the record field 'text', which this data does not have "
        "(fields: count, image, label); map a column to it with data.train.columns.text")
