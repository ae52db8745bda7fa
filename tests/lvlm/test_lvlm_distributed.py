"""The LVLM recipes under 2-process ZeRO-3 on CPU, parameters really partitioned, with steps where one rank's
batch has images and the other's has none (every rank runs the vision tower and the loss graph: no hang)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import tunevl
from tunevl.data.sampler import MicroBatchStream
from tunevl.data.synthetic_vqa import SyntheticVQA
from tunevl.models.tiny import ensure_tiny

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
PRESETS = Path(tunevl.__file__).parent / "recipes" / "deepspeed"
STEPS, SEED = 4, 3


SYNTHETIC_VQA = ["data.train={_component_: synthetic_vqa, split: train}",  # the recipes read your JSONL;
                 "data.eval={_component_: synthetic_vqa, split: eval}"]     # tests swap in synthetic questions


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mixed_steps(dataset) -> list[int]:
    """Steps at which exactly one of the two ranks gets a record with images."""
    has_image = []
    for rank in range(2):
        stream = MicroBatchStream(len(dataset), 1, 2, rank, SEED, 1)
        has_image.append([bool(dataset[idx[0]]["images"]) for _, idx in stream.iterate(0, STEPS)])
    return [s for s in range(STEPS) if has_image[0][s] != has_image[1][s]]


RUNS = [("lvlm/qwen2_vl_soft_prompt_lora", "tiny-qwen2-vl"), ("lvlm/llava_sft_lora", "tiny-llava"),
        ("lvlm/qwen2_5_vl_sft_lora", "tiny-qwen2.5-vl"), ("lvlm/idefics3_sft_lora", "tiny-idefics3"),
        ("lvlm/paligemma_sft_lora", "tiny-paligemma")]
# 512 px tiles' budget shrunk with the tiny twin's 32 px tiles (a size, not a feature).
TINY_MODEL_OVERRIDES = {"lvlm/idefics3_sft_lora": {"model.processor_kwargs.size": "{longest_edge: 64}"}}


@pytest.mark.parametrize("recipe,tiny", RUNS)
def test_zero3_two_processes_mixed_image_batches(recipe, tiny, tmp_path):
    preset = json.loads((PRESETS / "zero3.json").read_text())
    preset["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # partition every tiny weight
    (tmp_path / "zero3_test.json").write_text(json.dumps(preset))
    out = tmp_path / "run"
    data = {"num_samples": 32, "image_size": 32, "text_only": 0.5}
    assert _mixed_steps(SyntheticVQA(**data)), "the data must give a step with images on one rank only"
    overrides = {
        "model.name_or_path": ensure_tiny(tiny), "train.output_dir": str(out), "train.max_steps": STEPS, "train.seed": SEED,
        "train.per_device_train_batch_size": 1, "train.save_steps": 0, "train.progress_bar": "false",
        "train.gradient_checkpointing": "false", "train.deepspeed": str(tmp_path / "zero3_test.json"),
        **{f"data.train.{k}": v for k, v in data.items()}, **TINY_MODEL_OVERRIDES.get(recipe, {}),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "tunevl", "train", recipe, *SYNTHETIC_VQA, *[f"{k}={v}" for k, v in overrides.items()], "~data.eval"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((out / "metrics.json").read_text())
    assert info["run"]["world_size"] == 2 and info["train"]["steps"] == STEPS
    parts = info["run"]["zero3_partitioned"]
    assert parts["partitioned"] == parts["total"] > 0, parts
    m = tunevl.load(out)
    record = SyntheticVQA(2, split="eval", image_size=32)[0]
    assert isinstance(m.generate(record["images"], "How many circles?", max_new_tokens=3), str)
    if "soft_prompt" in recipe:
        assert m.view.soft_prompt is not None and m.view.soft_prompt.weight.abs().sum() > 0
