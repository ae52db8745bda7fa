"""``tunevl eval MODEL --benchmark NAME --data PATH``: a base checkpoint scored on a benchmark, JSON and PNG out."""

from __future__ import annotations

import json

from tunevl.cli import main


def test_benchmark_on_a_base_checkpoint_writes_json_and_confusion_png(tiny_clip_path, tmp_path, capsys):
    out = tmp_path / "res" / "count.json"
    args = ["eval", tiny_clip_path, "--benchmark", "synthetic_counting", "--data-arg", "num_samples=24",
            "--data-arg", "max_count=4", "--out", str(out), "--batch-size", "8"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "synthetic_counting/accuracy" in table and "confusion" not in table
    saved = json.loads(out.read_text())
    assert saved["benchmark"] == "synthetic_counting" and len(saved["metrics"]["synthetic_counting/confusion"]) == 3
    assert (tmp_path / "res" / "count_synthetic_counting_confusion.png").is_file()
    assert main(["eval", tiny_clip_path, "--benchmark", "synthetic_binding", "--data-arg", "num_samples=6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["synthetic_binding/num_items"] == 6


def test_benchmark_errors_name_the_option(tiny_clip_path, tmp_path, capsys):
    assert main(["eval", tiny_clip_path, "--benchmark", "sugarcrep", "--data", str(tmp_path)]) == 2
    assert "did you mean 'sugarcrepe'?" in capsys.readouterr().err
    assert main(["eval", tiny_clip_path, "--benchmark", "sugarcrepe", "--data", str(tmp_path / "none"),
                 "--data-arg", f"image_root={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--data: no such file or folder: {tmp_path / 'none'}")
    assert main(["eval", tiny_clip_path, "--benchmark", "winoground", "--data", str(tmp_path),
                 "--data-arg", f"image_root={tmp_path / 'nope'}"]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and len(err.strip().splitlines()) == 1
