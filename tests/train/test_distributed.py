"""2 processes on CPU (gloo) under DDP, ZeRO-2 and ZeRO-3 give the adapter, loss history and evaluation of one
process on the same global batch; next-token gradients do not depend on how the step's batch is split."""

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
from tunevl.train.loop import run

sys.path.insert(0, os.path.dirname(__file__))
from conftest import next_token_overrides  # noqa: E402
from test_step_math import _step_grads, _tiny_clip_with_scale, relative_difference  # noqa: E402

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
PRESETS = Path(tunevl.__file__).parent / "recipes" / "deepspeed"
HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overrides(quick, model, out, per_device):
    # The quickstart as shipped (evaluation at the start and the end included), shrunk to 4 steps.
    return quick(model, out, steps=4, **{"train.per_device_train_batch_size": per_device,
                                         "train.gradient_accumulation_steps": 2, "train.logging_steps": 2})


def _launch(target: list[str]) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), *target]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _torchrun(args: list[str]) -> None:
    _launch(["-m", "tunevl", "train", "quickstart", *args])


def _zero3_preset(tmp_path) -> Path:
    # The shipped preset keeps parameters under 1e5 elements whole: every tiny-model weight.
    # The test preset partitions everything, so this really is ZeRO-3.
    preset = json.loads((PRESETS / "zero3.json").read_text())
    preset["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = tmp_path / "zero3_test.json"
    path.write_text(json.dumps(preset))
    return path


def _assert_same_adapter(got_dir: Path, want_dir: Path) -> None:
    want, got = load_file(want_dir / "adapter_model.safetensors"), load_file(got_dir / "adapter_model.safetensors")
    assert want.keys() == got.keys() and len(want) > 0
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=2e-6, msg=key)
    torch.testing.assert_close(
        load_file(got_dir / "tunevl_extras.safetensors")["logit_scale"],
        load_file(want_dir / "tunevl_extras.safetensors")["logit_scale"], rtol=0, atol=2e-6,
    )


def _assert_same_run(got_dir: Path, want_dir: Path) -> None:
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (got_dir, want_dir))
    # The logged loss is the global one (all ranks), not rank 0's share.
    assert [h["step"] for h in got["history"]] == [h["step"] for h in want["history"]] == [2, 4]
    for g, w in zip(got["history"], want["history"]):
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-5)
    # Each rank evaluated its share; the gathered metrics are those of one process.
    for when in ("base", "trained"):
        assert got[when].keys() == want[when].keys()
        for key, value in want[when].items():
            assert got[when][key] == pytest.approx(value, abs=1e-6), (when, key)


@pytest.fixture(scope="module")
def capped_clip(tmp_path_factory) -> str:
    """A tiny CLIP whose logit scale sits at OpenAI's stored 4.6052, just above fp32 ln(100)."""
    return _tiny_clip_with_scale(tmp_path_factory.mktemp("capped"), 4.6052)


@pytest.mark.parametrize("engine", ["ddp", "zero2", "zero3"])
def test_two_processes_equal_one(engine, capped_clip, tmp_path, quick):
    reference = tmp_path / "single"
    recipe = tunevl.load_recipe("quickstart", _overrides(quick, capped_clip, reference, per_device=16))
    recipe.validate()
    run(recipe)
    scale = float(load_file(reference / "tunevl_extras.safetensors")["logit_scale"])
    assert scale < 4.6052 and scale <= torch.tensor(100.0).log().item()  # it moved down from the cap

    out = tmp_path / engine
    args = _overrides(quick, capped_clip, out, per_device=8)
    if engine == "zero2":
        args.append(f"train.deepspeed={PRESETS / 'zero2.json'}")
    elif engine == "zero3":
        args += [f"train.deepspeed={_zero3_preset(tmp_path)}", "train.save_steps=2"]
    _torchrun(args)
    _assert_same_adapter(out, reference)
    _assert_same_run(out, reference)
    info = json.loads((out / "metrics.json").read_text())["run"]
    assert info["world_size"] == 2
    if engine == "zero3":
        parts = info["zero3_partitioned"]
        assert parts["partitioned"] == parts["total"] > 0, parts
        assert info["zero3_loaded_partitioned"] > 0  # zero.Init at load time: the base was never whole
        # DeepSpeed's checkpoint holds what trains, not the frozen base.
        state = out / "checkpoint-2" / "training_state" / "deepspeed"
        ckpt_bytes = sum(f.stat().st_size for f in state.rglob("*") if f.is_file())
        base_bytes = (Path(capped_clip) / "model.safetensors").stat().st_size
        assert ckpt_bytes < base_bytes, (ckpt_bytes, base_bytes)
        # Resuming DeepSpeed's engine checkpoint mid-run ends with the same adapter.
        resumed = tmp_path / "zero3-resumed"
        _torchrun(_overrides(quick, capped_clip, resumed, per_device=8) + [
            f"train.deepspeed={_zero3_preset(tmp_path)}", f"train.resume_from_checkpoint={out / 'checkpoint-2'}"])
        _assert_same_adapter(resumed, reference)


@pytest.mark.parametrize("engine", ["ddp", "zero3"])
def test_next_token_gradients_two_processes_equal_one(engine, tmp_path, mixed_answers):
    """2 processes x 2 accumulation steps x 1 record vs 1 process x 1 micro-batch of 4: answers of ~1 and
    ~10x as many tokens land in different micro-batches and ranks, the gradient stays the same."""
    from tunevl.models.tiny_lvlm import ensure_tiny

    model = ensure_tiny("tiny-llava")
    want = _step_grads(tmp_path, "lvlm/llava_sft_lora", next_token_overrides(model, mixed_answers, tmp_path / "one", 4, 1), "one")
    out = tmp_path / "two"
    args = next_token_overrides(model, mixed_answers, out, 1, 2)
    if engine == "zero3":
        args.append(f"train.deepspeed={_zero3_preset(tmp_path)}")
    _launch([str(HERE / "grad_probe.py"), str(out), "lvlm/llava_sft_lora", *args])
    for rank in range(2):
        got = torch.load(out / f"grads_rank{rank}.pt", weights_only=True)
        assert relative_difference(got, want) < 1e-5, rank


def test_bf16_deepspeed_bundle_holds_fp32_master_weights(tmp_path, tiny_clip_path, quick):
    """DeepSpeed in bf16 keeps a bf16 module copy and fp32 masters; the bundle is written from the masters."""
    out = tmp_path / "bf16"
    _torchrun(quick(tiny_clip_path, out, steps=3, **{"train.eval_at_start": "false", "train.bf16": "true",
                                                      "train.deepspeed": "zero2"}) + ["~data.eval"])
    adapter = load_file(out / "adapter_model.safetensors")
    assert {v.dtype for v in adapter.values()} == {torch.float32}
    lora_b = torch.cat([v.flatten() for k, v in adapter.items() if "lora_B" in k])
    off_grid = int((lora_b != lora_b.bfloat16().float()).sum())
    assert off_grid > 0.9 * lora_b.numel(), off_grid  # a bf16 copy would sit exactly on the bf16 grid
