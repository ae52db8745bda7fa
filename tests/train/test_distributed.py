"""2 processes on CPU (gloo) under DDP, ZeRO-2 and ZeRO-3 give the adapter of one process on the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tunevl
from tunevl.data.synthetic import SyntheticShapes, write_synthetic
from tunevl.train.loop import run

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
PRESETS = Path(tunevl.__file__).parent / "recipes" / "deepspeed"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overrides(quick, model, out, per_device):
    return quick(model, out, steps=4, **{"train.per_device_train_batch_size": per_device, "train.eval_at_start": "false",
                                         "train.gradient_accumulation_steps": 2}) + ["~data.eval"]


def _torchrun(args: list[str], recipe: str = "quickstart") -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "tunevl", "train", recipe, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _assert_same_adapter(got_dir: Path, want_dir: Path) -> None:
    want, got = load_file(want_dir / "adapter_model.safetensors"), load_file(got_dir / "adapter_model.safetensors")
    assert want.keys() == got.keys() and len(want) > 0
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=2e-6, msg=key)
    if (want_dir / "tunevl_extras.safetensors").is_file():
        torch.testing.assert_close(
            load_file(got_dir / "tunevl_extras.safetensors")["logit_scale"],
            load_file(want_dir / "tunevl_extras.safetensors")["logit_scale"], rtol=0, atol=2e-6,
        )


@pytest.mark.parametrize("engine", ["ddp", "zero2", "zero3"])
def test_two_processes_equal_one(engine, tiny_clip_path, tmp_path, quick):
    reference = tmp_path / "single"
    recipe = tunevl.load_recipe("quickstart", _overrides(quick, tiny_clip_path, reference, per_device=16))
    recipe.validate()
    run(recipe)

    out = tmp_path / engine
    args = _overrides(quick, tiny_clip_path, out, per_device=8)
    if engine == "zero2":
        args.append(f"train.deepspeed={PRESETS / 'zero2.json'}")
    elif engine == "zero3":
        # The shipped preset keeps parameters under 1e5 elements whole: every tiny-model weight.
        # The test preset partitions everything, so this really is ZeRO-3.
        preset = json.loads((PRESETS / "zero3.json").read_text())
        preset["zero_optimization"]["stage3_param_persistence_threshold"] = 0
        (tmp_path / "zero3_test.json").write_text(json.dumps(preset))
        args += [f"train.deepspeed={tmp_path / 'zero3_test.json'}", "train.save_steps=2"]
    _torchrun(args)
    _assert_same_adapter(out, reference)
    info = json.loads((out / "metrics.json").read_text())["run"]
    assert info["world_size"] == 2
    if engine == "zero3":
        parts = info["zero3_partitioned"]
        assert parts["partitioned"] == parts["total"] > 0, parts
        # Resuming DeepSpeed's engine checkpoint mid-run ends with the same adapter.
        resumed = tmp_path / "zero3-resumed"
        _torchrun(_overrides(quick, tiny_clip_path, resumed, per_device=8) + [
            f"train.deepspeed={tmp_path / 'zero3_test.json'}", f"train.resume_from_checkpoint={out / 'checkpoint-2'}"])
        _assert_same_adapter(resumed, reference)


def _counting_data(tmp_path) -> Path:
    jsonl = write_synthetic(tmp_path / "data", SyntheticShapes(256, split="train"))
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for i, row in enumerate(rows):
        if i % 16:  # one counting record in 16: most micro-batches of 8 have none
            row.pop("count")
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return jsonl


def _count_overrides(model, data, out, per_device):
    return [f"model.name_or_path={model}", f"data.train={{_component_: jsonl, path: {data}}}", "~data.eval",
            "~eval.benchmarks", f"train.output_dir={out}", "train.max_steps=3", f"train.per_device_train_batch_size={per_device}",
            "train.gradient_accumulation_steps=2", "train.dataloader_num_workers=0", "train.save_steps=0",
            "train.progress_bar=false", "train.report_to=none", "train.learning_rate=1e-3", "train.warmup_ratio=0",
            "adapters.lora.lora_dropout=0"]  # dropout draws differ between 1 and 2 processes


_ZERO3_CLAMP = pytest.mark.xfail(reason="DeepSpeedEngine.step's logit-scale clamp (safe_set_full_fp32_param) fails under "
                                        "ZeRO-3 on CPU at this commit, for the quickstart too", strict=False)


@pytest.mark.parametrize("engine", ["ddp", pytest.param("zero3", marks=_ZERO3_CLAMP)])
def test_counting_on_two_processes_equals_one(engine, tiny_clip_path, tmp_path):
    """Mixed batches: a rank whose micro-batch holds no counting record still runs the counting graph (a zero
    term), and the term stays a mean over the step's counting records, so 2 processes equal 1."""
    data = _counting_data(tmp_path)
    reference = tmp_path / "single"
    recipe = tunevl.load_recipe("clip/count", _count_overrides(tiny_clip_path, data, reference, 16))
    recipe.validate()
    run(recipe)

    out = tmp_path / engine
    args = _count_overrides(tiny_clip_path, data, out, 8)
    if engine == "zero3":
        preset = json.loads((PRESETS / "zero3.json").read_text())
        preset["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # really partition the tiny model
        (tmp_path / "zero3_test.json").write_text(json.dumps(preset))
        args.append(f"train.deepspeed={tmp_path / 'zero3_test.json'}")
    _torchrun(args, recipe="clip/count")
    _assert_same_adapter(out, reference)
