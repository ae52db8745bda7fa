"""Kill a run with SIGKILL mid-epoch, resume it, and end with the adapter of an uninterrupted run."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

import tunevl
from tunevl.train.checkpoint import list_checkpoints
from tunevl.train.loop import run

STEPS = 60


def _overrides(quick, model, out, *extra):
    return quick(
        model, out, steps=STEPS,
        **{"train.save_steps": 5, "train.eval_at_start": "false", "data.train.num_samples": 4096,
           "adapters.lora.lora_dropout": 0.1},  # dropout: the RNG state must be restored too
    ) + ["~data.eval", *extra]


def test_sigkill_then_resume_matches_uninterrupted(tiny_clip_path, tmp_path, quick):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    recipe = tunevl.load_recipe("quickstart", _overrides(quick, tiny_clip_path, reference))
    recipe.validate()
    run(recipe)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tunevl", "train", "quickstart", *_overrides(quick, tiny_clip_path, killed)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (killed / "checkpoint-10").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    still_running = proc.poll() is None
    proc.kill()
    proc.wait()
    assert still_running, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    done = [int(p.name.split("-")[1]) for p in list_checkpoints(killed)]
    assert done and max(done) < STEPS and not (killed / "adapter_model.safetensors").exists()

    resumed = tunevl.load_recipe("quickstart", _overrides(quick, tiny_clip_path, killed, "train.resume_from_checkpoint=latest"))
    resumed.validate()
    metrics, _ = run(resumed)
    assert metrics["train"]["steps"] == STEPS

    want = load_file(reference / "adapter_model.safetensors")
    got = load_file(killed / "adapter_model.safetensors")
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6, msg=key)
    torch.testing.assert_close(
        load_file(killed / "tunevl_extras.safetensors")["logit_scale"],
        load_file(reference / "tunevl_extras.safetensors")["logit_scale"], rtol=0, atol=1e-6,
    )
