"""The optimizer step's math: gradients independent of how the global batch is split, a logit scale that keeps
learning at its cap, fp32 scalars under a bf16 base, non-finite steps never applied, one host sync per step."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest
import torch
from safetensors.torch import load_file

import tunevl
from tunevl.train.loop import run

sys.path.insert(0, os.path.dirname(__file__))
from conftest import next_token_overrides  # noqa: E402
from grad_probe import patch  # noqa: E402


def _recipe(name, overrides):
    recipe = tunevl.load_recipe(name, overrides)
    recipe.validate()
    return recipe


def _step_grads(tmp_path, name, overrides, tag) -> dict[str, torch.Tensor]:
    out = tmp_path / tag
    out.mkdir()
    from tunevl.train import engine as engines

    saved = {cls: cls.step for cls in (engines.TorchEngine, engines.DeepSpeedEngine)}
    patch(str(out), 0)
    try:
        run(_recipe(name, overrides))
    finally:
        for cls, step in saved.items():
            cls.step = step
    return torch.load(out / "grads_rank0.pt", weights_only=True)


def relative_difference(got: dict, want: dict) -> float:
    """||got - want|| / ||want|| over all trainable gradients together."""
    assert got.keys() == want.keys() and want
    num = sum(float((got[k].double() - want[k].double()).pow(2).sum()) for k in want)
    den = sum(float(want[k].double().pow(2).sum()) for k in want)
    return math.sqrt(num / den)


def test_next_token_gradients_do_not_depend_on_the_accumulation_split(tmp_path, mixed_answers):
    """1 micro-batch of 4 records (answers of ~1 and ~10x as many tokens) vs 4 micro-batches of 1: the
    same mean over the step's labelled tokens, so the same gradient (the 4.46 transformers fix)."""
    from tunevl.models.tiny_lvlm import ensure_tiny

    model = ensure_tiny("tiny-llava")
    whole = _step_grads(tmp_path, "lvlm/llava_sft_lora", next_token_overrides(model, mixed_answers, tmp_path / "a", 4, 1), "whole")
    split = _step_grads(tmp_path, "lvlm/llava_sft_lora", next_token_overrides(model, mixed_answers, tmp_path / "b", 1, 4), "split")
    assert relative_difference(split, whole) < 1e-5
    assert sum(float(g.abs().sum()) for g in whole.values()) > 0


def _tiny_clip_with_scale(tmp_path, raw: float) -> str:
    from tunevl.models.tiny import build_tiny_clip, save_tiny_clip

    path = tmp_path / f"clip-scale-{raw}"
    model, processor = build_tiny_clip(seed=0)
    with torch.no_grad():
        model.logit_scale.fill_(raw)
    save_tiny_clip(path, model, processor)
    return str(path)


def test_logit_scale_at_openai_cap_moves_down_and_stays_clamped(tmp_path, quick):
    """OpenAI's checkpoints store 4.6052 > fp32 ln(100): a forward clamp would freeze it. On a random tiny CLIP
    the contrastive loss wants a smaller scale: it must go down from the cap, and never above it."""
    cap = math.log(100.0)
    model = _tiny_clip_with_scale(tmp_path, 4.6052)
    out = tmp_path / "run"
    recipe = _recipe("quickstart", quick(model, out, steps=6, **{"train.eval_at_start": "false", "train.learning_rate": 0.02,
                                                                   "train.warmup_ratio": 0}) + ["~data.eval"])
    _, module = run(recipe)
    raw = float(module.view.base_model.logit_scale.detach())
    assert raw < cap - 0.01, raw
    assert float(load_file(out / "tunevl_extras.safetensors")["logit_scale"]) == pytest.approx(raw)
    # Above the cap, the gradient still flows (straight through) and the value used is the cap.
    view = module.view
    with torch.no_grad():
        view.base_model.logit_scale.fill_(4.7)
    scale = view.logit_scale()
    assert float(scale) == pytest.approx(100.0, rel=1e-6)
    scale.sum().backward()
    assert float(view.base_model.logit_scale.grad) == pytest.approx(100.0, rel=1e-6)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_bf16_base_keeps_fp32_scale_and_bias(family, tmp_path, tiny_clip_path):
    from tunevl.models import ModelConfig, load_view

    path = _tiny_clip_with_scale(tmp_path, 4.6052) if family == "clip" else "tiny-siglip"
    fp32 = load_view(ModelConfig(name_or_path=path, train_logit_scale=True), torch_dtype=torch.float32)
    bf16 = load_view(ModelConfig(name_or_path=path, train_logit_scale=True), torch_dtype=torch.bfloat16)
    frozen = [p for n, p in bf16.base_model.named_parameters() if n not in bf16.extra_names]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)  # the frozen base is bf16
    for name in bf16.extra_names:
        got, want = getattr(bf16.base_model, name), getattr(fp32.base_model, name)
        assert got.dtype == torch.float32 and torch.equal(got.detach(), want.detach()), name
    if family == "clip":
        assert float(bf16.logit_scale()) == pytest.approx(100.0, rel=1e-5)  # not 98.9


def test_conflicting_deepspeed_json_fails_before_anything_loads(tmp_path, tiny_clip_path, quick, monkeypatch):
    from tunevl.config.errors import RecipeError

    ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": 4, "gradient_clipping": 0.5,
          "zero_optimization": {"stage": 2}}
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    overrides = quick(tiny_clip_path, tmp_path / "run", steps=2) + [f"train.deepspeed={tmp_path / 'ds.json'}"]
    recipe = tunevl.load_recipe("quickstart", overrides)
    with pytest.raises(RecipeError) as err:
        recipe.validate()
    message = str(err.value)
    assert "gradient_accumulation_steps=4" in message and "train.gradient_accumulation_steps=1" in message
    assert "gradient_clipping=0.5" in message and "train.max_grad_norm=1.0" in message
    assert "train.deepspeed" in message and "\n" not in message

    import tunevl.train.loop as loop

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the DeepSpeed config was checked")

    monkeypatch.setattr(loop, "load_view", no_loading)
    monkeypatch.setattr(loop.distributed, "setup", lambda use_deepspeed: loop.distributed.DistInfo())
    with pytest.raises(RecipeError, match="gradient_accumulation_steps=4"):
        run(tunevl.load_recipe("quickstart", overrides))


def test_nonfinite_gradient_is_never_applied(tiny_clip_path, tmp_path, quick, monkeypatch):
    """An inf in one gradient at step 2: the run stops before the update, and the saved state is the weights
    after step 1, all finite."""
    from tunevl.errors import TrainingError
    from tunevl.train import engine as engines

    original, calls = engines.TorchEngine.step, []

    def poisoned(self, loss_sum):
        calls.append(1)
        if len(calls) == 2:
            name, param = next((n, p) for n, p in self.module.named_parameters() if "lora_B" in n)
            param.grad[0, 0] = float("inf")
            poisoned.before = {n: p.detach().clone() for n, p in self.module.named_parameters() if p.requires_grad}
        return original(self, loss_sum)

    monkeypatch.setattr(engines.TorchEngine, "step", poisoned)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"non-finite gradients at step 2: the update was not applied.*checkpoint-1"):
        run(_recipe("quickstart", quick(tiny_clip_path, out, steps=4, **{"train.eval_at_start": "false"}) + ["~data.eval"]))
    saved = load_file(out / "checkpoint-1" / "training_state" / "trainable.safetensors")
    assert saved and all(torch.isfinite(v).all() for v in saved.values())
    for name, value in poisoned.before.items():
        assert torch.equal(saved[name], value), name  # the weights the broken step started from
    state = json.loads((out / "checkpoint-1" / "training_state" / "trainer_state.json").read_text())
    assert state["step"] == 1


def test_last_good_state_is_before_the_update_that_broke_the_forward(tiny_clip_path, tmp_path, quick):
    """Learning rate 1e30: step 1's update is finite but huge, step 2's forward is not finite. The saved state
    is the one before step 1's update (whose forward was the last finite one), not weights of size 1e30."""
    from tunevl.errors import TrainingError

    out = tmp_path / "run"
    recipe = _recipe("quickstart", quick(tiny_clip_path, out, steps=4, **{
        "train.eval_at_start": "false", "train.learning_rate": 1e30, "train.warmup_ratio": 0,
        "train.lr_scheduler_type": "constant"}) + ["~data.eval"])
    with pytest.raises(TrainingError, match=r"non-finite loss at step 2.*after step 0.*checkpoint-0"):
        run(recipe)
    saved = load_file(out / "checkpoint-0" / "training_state" / "trainable.safetensors")
    assert all(float(v.abs().max()) < 100 for v in saved.values())
    assert all(float(v.abs().sum()) == 0 for k, v in saved.items() if "lora_B" in k)  # the initial adapter
    assert json.loads((out / "checkpoint-0" / "training_state" / "trainer_state.json").read_text())["step"] == 0


def test_warmup_steps_as_transformers_computes_them():
    from transformers import TrainingArguments

    from tunevl.train.config import TrainConfig
    from tunevl.train.engine import make_scheduler

    cfg = TrainConfig(warmup_ratio=0.05, lr_scheduler_type="linear", learning_rate=1.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(cfg, opt, total_steps=30)  # 0.05 * 30 = 1.5 -> 2 warm-up steps
    assert TrainingArguments(output_dir="x", warmup_steps=0.05).get_warmup_steps(30) == 2  # a fraction, in 5.x
    lrs = []
    for _ in range(3):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0])


def test_resume_continues_the_logging_window(tiny_clip_path, tmp_path, quick):
    """Losses are logged every 3 steps; resuming from step 2 must average steps 1-3 at step 3, as the
    uninterrupted run does (not step 3 alone)."""
    common = {"train.eval_at_start": "false", "train.logging_steps": 3, "train.save_steps": 2, "train.save_total_limit": "null"}
    full = tmp_path / "full"
    run(_recipe("quickstart", quick(tiny_clip_path, full, steps=6, **common) + ["~data.eval"]))
    resumed = tmp_path / "resumed"
    run(_recipe("quickstart", quick(tiny_clip_path, resumed, steps=6, **common, **{
        "train.resume_from_checkpoint": str(full / "checkpoint-2")}) + ["~data.eval"]))
    want = json.loads((full / "metrics.json").read_text())["history"]
    got = json.loads((resumed / "metrics.json").read_text())["history"]
    assert [h["step"] for h in got] == [h["step"] for h in want] == [3, 6]
    for g, w in zip(got, want):
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-6, abs=1e-7)


def test_one_host_sync_per_optimizer_step(tiny_clip_path, tmp_path, quick, monkeypatch):
    """The loss read-out and the finiteness check share one synchronisation per step (not several per
    micro-batch): count the ``item``/``tolist`` calls made by the training code."""
    from pathlib import Path

    import tunevl as package

    root = str(Path(package.__file__).parent)
    watched = ("train", "losses", "objectives", "models", "adapters")
    counts = {"n": 0}
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "tolist")}

    def counting(name):
        def call(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(root) and any(f"/{w}/" in caller for w in watched):
                counts["n"] += 1
            return originals[name](self, *args, **kwargs)
        return call

    for name in originals:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    steps = 4
    run(_recipe("quickstart", quick(tiny_clip_path, tmp_path / "run", steps=steps, **{
        "train.eval_at_start": "false", "train.gradient_accumulation_steps": 2}) + ["~data.eval"]))
    assert counts["n"] == steps, counts
