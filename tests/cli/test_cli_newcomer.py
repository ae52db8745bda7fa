"""A newcomer's first hour: what must simply work (the gauntlet of bad inputs is test_cli_gauntlet.py)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

import tunevl
from tunevl.cli import main

RUN = ["model.name_or_path=tiny-clip", "train.max_steps=2", "train.save_steps=1", "train.per_device_train_batch_size=8",
       "train.progress_bar=false", "train.eval_steps=1", "data.train.num_samples=64", "data.eval.num_samples=16"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny-clip run with checkpoints and evaluations during training, and what it printed."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("newcomer") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", "quickstart", *RUN, f"train.output_dir={out}"]) == 0
    return out, printed.getvalue()


def test_train_alone_prints_its_usage(capsys):
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: tunevl train [-h] recipe [KEY=VALUE ...]") and "Examples:" in err
    assert "required" not in err


def test_validate_imports_neither_peft_nor_transformers():
    code = ("import sys; from tunevl.cli import main; code = main(['validate', 'lvlm/qwen2_vl_soft_prompt_lora']); "
            "print(code, sorted(m for m in ('peft', 'transformers', 'deepspeed', 'bitsandbytes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stderr[-2000:]


def test_checkpoints_carry_the_tunevl_card_and_a_portable_base(run):
    from tunevl.adapters.card import CARD_MARKER

    out, _ = run
    card = (out / "checkpoint-1" / "README.md").read_text()
    assert CARD_MARKER in card and "[More Information Needed]" not in card
    assert f'tunevl.load("{out / "checkpoint-1"}")' in card and ".tmp" not in card
    for folder in (out, out / "checkpoint-1"):
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-clip"
    assert not (out / ".bundle.tmp").exists()


def test_evaluations_during_training_are_a_table_and_a_figure(run):
    out, printed = run
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["during"]) == {"1"}
    lines = printed.splitlines()
    head = lines.index("evaluation during training")
    assert lines[head + 1].split()[:2] == ["step", "i2t_R@1"]
    assert [row.split()[0] for row in lines[head + 2: head + 5]] == ["0", "1", "2"]
    assert f"{metrics['during']['1']['i2t_R@1']:.1f}" in lines[head + 3]
    height = Image.open(out / "loss_curve.png").size[1]
    assert height > 600  # two panels: loss + learning rate, and the evaluations


def test_a_loss_curve_of_one_point_is_drawn(tmp_path):
    from tunevl.train.report import plot_run

    plot_run([{"step": 1, "loss": 0.5, "lr": 1e-3}], {}, tmp_path / "curve.png")
    import numpy as np

    pixels = torch.from_numpy(np.asarray(Image.open(tmp_path / "curve.png").convert("RGB")).reshape(-1, 3).astype("int64"))
    blue = torch.tensor([31, 119, 180])  # matplotlib's tab:blue, the loss colour
    assert ((pixels - blue).abs().sum(dim=1) < 30).sum() > 10


def test_eval_uses_the_bundle_recipe_data(run, capsys):
    out, _ = run
    assert main(["eval", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"]["num_images"] == 16 and "i2t_R@1" in result["metrics"]


def test_eval_a_base_model_by_name(tmp_path, capsys):
    from tunevl.data.synthetic import SyntheticShapes, write_synthetic

    data = write_synthetic(tmp_path / "d", SyntheticShapes(num_samples=8))
    assert main(["eval", "tiny-clip", "--data", str(data), "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["num_images"] == 8


def test_load_uses_the_gpu_when_there_is_one(run):
    from tunevl.inference import resolve_device

    out, _ = run
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want and tunevl.load(out).device.type == want
    assert tunevl.load(out, device="cpu").device.type == "cpu"


def test_overwrite_replaces_the_run_and_resume_warns_on_a_learning_rate_change(run, tmp_path, caplog):
    out = tmp_path / "run"
    shutil.copytree(run[0], out)
    args = ["train", "quickstart", *RUN, f"train.output_dir={out}", "train.eval_steps=0", "train.eval_at_start=false"]
    with caplog.at_level(logging.WARNING, logger="tunevl"):
        assert main([*args, "train.resume_from_checkpoint=latest", "train.learning_rate=5e-4"]) == 0
    assert "train.learning_rate: 0.001 -> 0.0005" in caplog.text
    assert json.loads((out / "metrics.json").read_text())["train"]["steps"] == 2
    before = (out / "adapter_model.safetensors").read_bytes()
    assert main([*args, "train.overwrite_output_dir=true", "train.seed=7", "train.save_steps=0"]) == 0
    assert not list(out.glob("checkpoint-*")) and (out / "adapter_model.safetensors").read_bytes() != before
    assert json.loads((out / "recipe.yaml").read_text().split("seed: ")[1].split()[0]) == 7


def test_merge_overwrite_replaces_a_folder(run, tmp_path):
    from transformers import CLIPModel

    out, _ = run
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "old.txt").write_text("old")
    assert main(["merge", str(out), str(merged), "--overwrite"]) == 0
    assert not (merged / "old.txt").exists() and not (tmp_path / "merged.tmp").exists()
    CLIPModel.from_pretrained(merged)


def test_csv_with_a_byte_order_mark_reads_its_header(tmp_path):
    from tunevl.data.sources import CsvSource

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "d.csv").write_bytes("\ufefftext,image\na cat,a.png\n".encode("utf-8"))
    record = CsvSource(str(tmp_path / "d.csv"))[0]
    assert record["text"] == "a cat" and record["image"].path == str(tmp_path / "a.png")


def test_llava_sharegpt_instruction_data_reads_natively(tmp_path, capsys):
    """``llava_v1_5_mix665k.json``'s layout: a JSON list of {id, image, conversations: [{from, value}]}."""
    from tunevl.data.sources import JsonlSource

    (tmp_path / "coco").mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "coco" / "1.jpg")
    rows = [{"id": "1", "image": "coco/1.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "Red."},
        {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes."}]},
        {"id": "2", "model": "", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}]
    (tmp_path / "mix.json").write_text(json.dumps(rows))
    source = JsonlSource(str(tmp_path / "mix.json"), image_root=str(tmp_path))
    record = source[0]
    assert record["messages"] == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
        {"role": "user", "content": [{"type": "text", "text": "Sure?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Yes."}]},
    ]
    assert record["image"].path == str(tmp_path / "coco" / "1.jpg") and source[1].get("image") is None
    argv = ["data", "check", "lvlm/llava_sft_lora", "model.name_or_path=tiny-llava", "model.family=llava", "~data.eval",
            f"data.train={{_component_: jsonl, path: {tmp_path / 'mix.json'}, image_root: {tmp_path}}}",
            "train.per_device_train_batch_size=1", "train.gradient_accumulation_steps=1"]
    assert main(argv) == 0 and "data.train: 2 records ok" in capsys.readouterr().out


def test_eval_split_holds_out_part_of_one_file(tmp_path):
    from tunevl.data.preflight import build_dataset
    from tunevl.data.synthetic import SyntheticShapes, write_synthetic

    data = write_synthetic(tmp_path / "d", SyntheticShapes(num_samples=20))
    node = f"data.train={{_component_: jsonl, path: {data}, eval_split: 0.25, eval_split_seed: 3}}"
    recipe = tunevl.load_recipe("quickstart", ["~data.eval", node, "train.per_device_train_batch_size=4"])
    recipe.validate()
    train, held_out = build_dataset(recipe, "train"), build_dataset(recipe, "eval")
    texts = lambda ds: [ds.dataset[i]["text"] for i in ds.keep]  # noqa: E731
    assert len(train) == 15 and len(held_out) == 5 and not set(train.keep) & set(held_out.keep)
    assert [held_out[i]["index"] for i in range(5)] == list(range(5)) and texts(held_out)
    again = build_dataset(recipe, "eval")
    assert again.keep == held_out.keep  # seeded: the same records every time
    other = tunevl.load_recipe("quickstart", ["~data.eval", node.replace("seed: 3", "seed: 4"), "train.per_device_train_batch_size=4"])
    assert build_dataset(other, "eval").keep != held_out.keep


def test_lvlm_bundle_eval_reports_answer_accuracy_with_or_without_the_answer_turn(tmp_path, capsys):
    from tunevl.data.synthetic_vqa import SyntheticVQA, write_vqa

    data = write_vqa(tmp_path / "vqa", SyntheticVQA(num_samples=6, split="eval", image_size=32))
    out = tmp_path / "llava"
    assert main(["train", "lvlm/llava_sft_lora", "model.name_or_path=tiny-llava", "~data.eval", "train.max_steps=1",
                 f"data.train={{_component_: jsonl, path: {data}}}", "train.per_device_train_batch_size=2",
                 "train.gradient_accumulation_steps=1", "train.progress_bar=false", f"train.output_dir={out}"]) == 0
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    questions = tmp_path / "vqa" / "questions.jsonl"  # held-out questions: no assistant turn
    questions.write_text("".join(json.dumps({**r, "messages": r["messages"][:1]}) + "\n" for r in rows))
    capsys.readouterr()
    results = []
    for file in (data, questions):
        spec = f"{{_component_: jsonl, path: {file}, columns: {{answer: answer, candidates: candidates}}}}"
        assert main(["eval", str(out), "--data", spec, "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out)["metrics"])
    assert results[0] == results[1] and results[0]["n"] == 6 and 0 <= results[0]["accuracy"] <= 1
