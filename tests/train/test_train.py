"""Single-process training: what changes, what must not, and what the run leaves behind."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import tunevl
from tunevl.train.loop import run


def _recipe(overrides):
    recipe = tunevl.load_recipe("quickstart", overrides)
    recipe.validate()
    return recipe


def test_trainable_change_frozen_do_not(tiny_clip_path, tmp_path, quick):
    from transformers import CLIPModel

    recipe = _recipe(quick(tiny_clip_path, tmp_path / "run", steps=3, **{"train.eval_at_start": "false"}))
    metrics, module = run(recipe)
    base = CLIPModel.from_pretrained(tiny_clip_path).state_dict()
    trained = module.view.base_model.state_dict()
    changed_lora, frozen = 0, 0
    for name, param in module.named_parameters():
        if param.requires_grad and "lora_B" in name:
            changed_lora += int(param.abs().sum() > 0)  # lora_B starts at zero
    for name, value in trained.items():
        clean = name.replace("base_layer.", "")
        if "lora_" in name or clean not in base:
            continue
        if clean == "logit_scale":
            assert value.reshape(()) != base[clean], "the logit scale is trained in the quickstart"
            continue
        frozen += 1
        assert torch.equal(value, base[clean]), f"frozen weight {clean} changed"
    assert changed_lora == sum(1 for n, p in module.named_parameters() if "lora_B" in n) > 0
    assert frozen > 20
    assert metrics["train"]["steps"] == 3


def test_run_outputs_and_bundle_roundtrip(tiny_clip_path, tmp_path, quick):
    from peft import PeftModel
    from transformers import AutoModel

    from tunevl.data.synthetic import SyntheticShapes

    out = tmp_path / "run"
    recipe = _recipe(quick(tiny_clip_path, out, steps=4))
    metrics, module = run(recipe)
    for name in ("recipe.yaml", "metrics.json", "loss_curve.png", "tunevl.json", "adapter_config.json",
                 "adapter_model.safetensors", "tunevl_extras.safetensors"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert {"base", "trained", "train", "run", "history"} <= set(saved)
    assert saved["run"]["versions"]["torch"] == torch.__version__
    meta = json.loads((out / "tunevl.json").read_text())
    assert meta["family"] == "clip" and meta["format_version"] == 1 and meta["adapters"] == ["lora"]
    assert load_file(out / "tunevl_extras.safetensors")["logit_scale"].shape == ()  # original 0-dim shape

    ds = SyntheticShapes(num_samples=6, split="eval")
    images, texts = [ds[i]["image"] for i in range(6)], [ds[i]["text"] for i in range(6)]
    module.eval()
    with torch.no_grad():
        view = module.view
        want_img = view.encode_images(view.preprocess_images(images))
        want_txt = view.encode_texts(**view.tokenize(texts))
    m = tunevl.load(out)
    got_img, got_txt = m.embed_images(images), m.embed_texts(texts)
    assert torch.equal(got_img, want_img) and torch.equal(got_txt, want_txt)
    assert torch.allclose(got_img.norm(dim=-1), torch.ones(6), atol=1e-5)

    # A LoRA bundle also loads with plain peft on the base named in adapter_config.json.
    base_id = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    plain = PeftModel.from_pretrained(AutoModel.from_pretrained(base_id), out).eval()
    with torch.no_grad():
        tok = m.view.tokenize(texts)
        plain_txt = torch.nn.functional.normalize(plain.get_text_features(**tok).pooler_output, dim=-1)
        plain_img = torch.nn.functional.normalize(
            plain.get_image_features(pixel_values=m.view.preprocess_images(images)).pooler_output, dim=-1
        )
    assert torch.allclose(plain_txt, got_txt, atol=1e-6) and torch.allclose(plain_img, got_img, atol=1e-6)


def test_nonfinite_loss_stops_with_step_and_records(tiny_clip_path, tmp_path, quick, monkeypatch):
    from tunevl.errors import TrainingError
    from tunevl.objectives.contrastive import Contrastive

    original = Contrastive.loss

    def poisoned(self, **kw):
        out = original(self, **kw)
        return {k: v * float("nan") for k, v in out.items()}

    monkeypatch.setattr(Contrastive, "loss", poisoned)
    recipe = _recipe(quick(tiny_clip_path, tmp_path / "run", steps=2, **{"train.eval_at_start": "false"}))
    with pytest.raises(TrainingError, match=r"non-finite loss at step 1:.*record indices on rank 0: \[\d+.*checkpoint-0"):
        run(recipe)
    assert (tmp_path / "run" / "checkpoint-0" / "training_state" / "trainer_state.json").is_file()


def test_tensorboard_checkpointing_and_bf16_autocast(tiny_clip_path, tmp_path, quick):
    out = tmp_path / "run"
    recipe = _recipe(quick(tiny_clip_path, out, steps=2, **{
        "train.report_to": "tensorboard", "train.gradient_checkpointing": "true", "train.bf16": "true",
        "train.logging_steps": 1, "train.eval_at_start": "false",
    }) + ["~data.eval"])
    metrics, module = run(recipe)
    assert list((out / "logs").glob("events.out.tfevents.*"))
    assert module.view.base_model.text_model.encoder.gradient_checkpointing
    assert metrics["run"]["bf16"] is True and len(metrics_history(out)) == 2


def metrics_history(out):
    return json.loads((out / "metrics.json").read_text())["history"]
