"""Preference objectives under 2-process ZeRO-3 on CPU, every weight partitioned: S-VCO with the reference
computed every step (LoRA and soft prompt switched off on every rank), DPO from reference log-probs
precomputed across both ranks, next-token, and preference-accuracy evaluation, in one recipe: no hang,
and the bundle loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tunevl
from tunevl.models.tiny_lvlm import ensure_tiny

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
PRESETS = Path(tunevl.__file__).parent / "recipes" / "deepspeed"


def test_zero3_two_processes_svco_dpo_next_token(tmp_path):
    from tests.lvlm.test_lvlm_distributed import _free_port

    preset = json.loads((PRESETS / "zero3.json").read_text())
    preset["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # partition every tiny weight
    (tmp_path / "zero3_test.json").write_text(json.dumps(preset))
    out, cache = tmp_path / "run", tmp_path / "cache"
    overrides = {
        "model.name_or_path": ensure_tiny("tiny-qwen2-vl"), "train.output_dir": str(out), "train.max_steps": 3,
        "train.per_device_train_batch_size": 1, "train.gradient_accumulation_steps": 2, "train.save_steps": 0,
        "train.progress_bar": "false", "train.gradient_checkpointing": "false", "train.eval_at_start": "false",
        "train.deepspeed": str(tmp_path / "zero3_test.json"),
        "objectives": "[{_component_: svco}, {_component_: dpo, precompute_ref_log_probs: true}, {_component_: next_token, weight: 0.2}]",
    }
    data = ["data.train={_component_: synthetic_contrast, split: train, num_samples: 16, image_size: 32}",
            "data.eval={_component_: synthetic_contrast, split: eval, num_samples: 3, image_size: 32}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "tunevl", "train", "lvlm/svco_qwen2_vl", *data,
           *[f"{k}={v}" for k, v in overrides.items()]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNEVL_CACHE": str(cache)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((out / "metrics.json").read_text())
    assert info["run"]["world_size"] == 2 and info["train"]["steps"] == 3
    parts = info["run"]["zero3_partitioned"]
    assert parts["partitioned"] == parts["total"] > 0, parts
    assert "accuracy/pairs" in info["trained"]
    assert "reference log-probs of DPO: computing 16 records" in proc.stdout + proc.stderr
    assert len(list((cache / "reference_logps").glob("dpo-*.safetensors"))) == 1
    m = tunevl.load(out)
    assert m.view.soft_prompt is not None and m.view.soft_prompt.weight.abs().sum() > 0
