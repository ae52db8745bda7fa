"""``tunevl merge``: a checkpoint plain transformers loads, equal to bundle + base, for every adapter kind and family."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file
from torch import nn

import tunevl
from tunevl.adapters.merge import detach_tunevl_modules, merge, restore_shapes, split_extras
from tunevl.adapters.prompts import prompts_disabled
from tunevl.models import get_family
from tunevl.models.tiny import resolve_builtin


def test_merged_checkpoint_matches_bundle(bundle_of, kind, tmp_path):
    bundle = bundle_of(kind)
    meta = json.loads((bundle / "tunevl.json").read_text())
    hf_class = getattr(transformers, get_family(meta["family"]).model_class)
    out = merge(bundle, tmp_path / "merged")
    plain = hf_class.from_pretrained(out).eval()

    base_path = Path(resolve_builtin(meta["base_model"]["name_or_path"]))
    base_sd = hf_class.from_pretrained(base_path).state_dict()
    merged_sd = plain.state_dict()
    # No lora_*, base_layer, modules_to_save or soft-prompt keys (from_pretrained would drop them silently).
    assert set(merged_sd) == set(base_sd)
    assert set(load_file(out / "model.safetensors")) == set(load_file(base_path / "model.safetensors"))
    assert all(v.shape == base_sd[k].shape and v.dtype == base_sd[k].dtype for k, v in merged_sd.items())
    trained = load_file(bundle / "tunevl_extras.safetensors") if meta["extras"] else {}
    for name in ("logit_scale", "logit_bias"):
        if name in trained:
            assert torch.equal(merged_sd[name], trained[name]) and not torch.equal(trained[name], base_sd[name])
        elif name in base_sd:
            assert torch.equal(merged_sd[name], base_sd[name])
    changed = {k for k in base_sd if not torch.equal(merged_sd[k], base_sd[k])}
    for part in kind.merge_changes:
        assert any(part in k for k in changed), f"merging changed no weight named *{part}*"
    for part in kind.merge_keeps:
        assert not any(part in k for k in changed), f"merging changed {sorted(k for k in changed if part in k)}"

    ref = tunevl.load(bundle, quantize=False)  # a QLoRA bundle merges into the unquantised base
    if kind.generative:
        _check_generative(plain, ref, kind, out)
    else:
        _check_dual_encoder(plain, ref, kind, out)

    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and f"{hf_class.__name__}.from_pretrained" in card
    unmerged = [e for e in meta["extras"] if e not in base_sd]  # e.g. soft prompts: kept beside the weights
    side = out / "tunevl_extras.safetensors"
    assert ("Not merged" in card) == bool(unmerged) == side.exists()
    if unmerged:  # the side file holds exactly the prompt tensors, as trained
        kept = load_file(side)
        prompts = ("soft_prompt.", "text_prompts.", "visual_prompts.")
        assert sorted(kept) == sorted(unmerged) == [e for e in meta["extras"] if e.startswith(prompts)]
        assert all(torch.equal(kept[k], trained[k]) for k in kept)
        record = json.loads((out / "tunevl_unmerged.json").read_text())
        assert record["tensors"] == unmerged and record.get("prompts") == meta.get("prompts")
    if meta.get("prompts"):
        assert "They include the learned prompts" in card


def _check_dual_encoder(plain, ref, kind, out):
    """The merged model, fed by the merged folder's own processor, gives the bundle's embeddings and logits."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(out)
    images, texts = kind.inputs()
    siglip = ref.view.family == "siglip"  # SigLIP pads to max_length and pools the last position, as trained
    with torch.no_grad(), prompts_disabled(ref.view):  # prompts (e.g. VPT's) are what the merged model lacks
        px = processor.image_processor(images, return_tensors="pt")["pixel_values"]
        tok = processor(text=texts, padding="max_length", return_tensors="pt") if siglip else \
            processor.tokenizer(texts, padding=True, return_tensors="pt")
        tok = {k: v for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        img = F.normalize(plain.get_image_features(pixel_values=px).pooler_output, dim=-1)
        txt = F.normalize(plain.get_text_features(**tok).pooler_output, dim=-1)
        logits = plain(pixel_values=px, **tok).logits_per_image
        want_img, want_txt = ref.embed_images(images), ref.embed_texts(texts)
    assert torch.allclose(img, want_img, atol=1e-5) and torch.allclose(txt, want_txt, atol=1e-5)
    if ref.view.visual_prompts is not None:  # ... which is what the merged model cannot compute
        assert not torch.allclose(ref.embed_images(images), want_img, atol=1e-4)
    bias = ref.view.logit_bias()
    want = ref.view.logit_scale() * want_img @ want_txt.T + (bias if bias is not None else 0)
    assert torch.allclose(logits, want, atol=1e-4)


def _check_generative(plain, ref, kind, out):
    """The merged model gives the logits of bundle + base (the soft prompt, which cannot merge, switched off)."""
    from transformers import AutoImageProcessor, AutoTokenizer

    view = ref.view
    batch = view.collate(kind.conversations(), {"messages"})
    soft = batch.pop("soft_prompt_mask")
    with torch.no_grad():
        got = plain(**view.model_inputs(batch)).logits
        want = view.logits(batch)  # without the mask, soft-prompt slots keep their placeholder embeddings
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        if soft.any():  # the soft prompt is what the merged model lacks
            assert not torch.allclose(view.logits({**batch, "soft_prompt_mask": soft}), want, atol=1e-3)
    # The merged folder's processor pieces load with plain transformers and prepare inputs as tunevl does.
    images = kind.conversations()[0]["images"]
    pixels = AutoImageProcessor.from_pretrained(out)(images, return_tensors="pt")["pixel_values"]
    assert torch.equal(pixels, view.process_images(images)[0]["pixel_values"])
    text = "How many circles?"
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == view.tokenizer(text)["input_ids"]
    # AutoProcessor must build the family's transformers class (Qwen2-VL's also needs torchvision for its
    # video processor, whose settings the saved config must therefore carry).
    config = json.loads((out / "processor_config.json").read_text())
    assert config["processor_class"] == {"llava": "LlavaProcessor", "qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor",
                                         "idefics3": "Idefics3Processor", "paligemma": "PaliGemmaProcessor"}[view.family]
    wanted = getattr(transformers, config["processor_class"]).get_attributes()
    assert set(wanted) <= set(config) | {"tokenizer"}


def test_cli_merge_writes_a_loadable_checkpoint(bundle_of, tmp_path, capsys):
    from transformers import CLIPModel

    from tunevl.cli import main

    assert main(["merge", str(bundle_of("lora")), str(tmp_path / "m"), "--dtype", "bfloat16"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "m")
    model = CLIPModel.from_pretrained(tmp_path / "m", dtype="auto")
    assert model.visual_projection.weight.dtype == torch.bfloat16


def test_merge_from_the_hub(hub, bundle_of, tmp_path):
    from transformers import CLIPModel

    from tunevl.hub import push

    push(bundle_of("lora+logit_scale"), "tester/to-merge")
    from_hub = CLIPModel.from_pretrained(merge("tester/to-merge", tmp_path / "a")).state_dict()
    local = CLIPModel.from_pretrained(merge(bundle_of("lora+logit_scale"), tmp_path / "b")).state_dict()
    assert all(torch.equal(from_hub[k], local[k]) for k in local)


def test_merge_applies_the_logit_scale_clamp_tunevl_uses(bundle_of, tmp_path):
    import math
    import shutil

    from safetensors.torch import save_file
    from transformers import CLIPModel

    bundle = shutil.copytree(bundle_of("lora+logit_scale"), tmp_path / "bundle")
    save_file({"logit_scale": torch.tensor(7.0)}, bundle / "tunevl_extras.safetensors")
    merged = CLIPModel.from_pretrained(merge(bundle, tmp_path / "m"))
    assert merged.logit_scale.item() == torch.tensor(math.log(100.0)).item()
    assert torch.allclose(merged.logit_scale.exp(), tunevl.load(bundle).view.logit_scale())


def test_extras_that_are_not_weights_stay_unmerged():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.logit_scale = nn.Parameter(torch.zeros(()))

    merged, unmerged = split_extras(Model(), ["logit_scale", "soft_prompt.text"])
    assert merged == ["logit_scale"] and unmerged == ["soft_prompt.text"]


def test_restore_shapes_undoes_the_deepspeed_reshape(tiny_clip_path):
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(tiny_clip_path)
    value = model.logit_scale.detach().clone()
    model.logit_scale = nn.Parameter(value.reshape(1))
    assert restore_shapes(model) == ["logit_scale"]
    assert model.logit_scale.shape == () and torch.equal(model.logit_scale.detach(), value)
    assert restore_shapes(model) == []


def test_tunevl_modules_are_detached_before_saving():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].tunevl_soft_prompt = nn.Linear(1, 1)
    model[0].tunevl_soft_prompt.tunevl_inner = nn.Linear(1, 1)
    assert detach_tunevl_modules(model) == ["0.tunevl_soft_prompt"]
    assert sorted(model.state_dict()) == ["0.bias", "0.weight", "1.bias", "1.weight"]
