"""``tunevl merge``: a checkpoint plain transformers loads, equal to bundle + base, for every adapter kind."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import tunevl
from tunevl.adapters.merge import merge, restore_shapes, split_extras
from tunevl.data.synthetic import SyntheticShapes


def test_merged_checkpoint_matches_bundle(bundle_of, kind, tmp_path, tiny_clip_path):
    from transformers import AutoProcessor, CLIPModel

    bundle = bundle_of(kind)
    out = merge(bundle, tmp_path / "merged")
    plain = CLIPModel.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)

    base_sd = CLIPModel.from_pretrained(tiny_clip_path).state_dict()
    merged_sd = plain.state_dict()
    assert set(merged_sd) == set(base_sd)  # no lora_* or base_layer keys left
    assert merged_sd["logit_scale"].shape == base_sd["logit_scale"].shape == ()
    assert all(v.dtype == base_sd[k].dtype for k, v in merged_sd.items())
    meta = json.loads((bundle / "tunevl.json").read_text())
    if "logit_scale" in meta["extras"]:
        trained = load_file(bundle / "tunevl_extras.safetensors")["logit_scale"]
        assert torch.equal(merged_sd["logit_scale"], trained) and not torch.equal(trained, base_sd["logit_scale"])
    else:
        assert torch.equal(merged_sd["logit_scale"], base_sd["logit_scale"])
    changed = [k for k in base_sd if "encoder.layers" in k and not torch.equal(merged_sd[k], base_sd[k])]
    assert any("q_proj.weight" in k for k in changed) and not any("fc1" in k for k in changed)

    ds = SyntheticShapes(num_samples=6, split="eval")
    images, texts = [ds[i]["image"] for i in range(6)], [ds[i]["text"] for i in range(6)]
    ref = tunevl.load(bundle)
    with torch.no_grad():
        px = processor.image_processor(images, return_tensors="pt")["pixel_values"]
        tok = processor.tokenizer(texts, padding=True, return_tensors="pt")
        img = F.normalize(plain.get_image_features(pixel_values=px).pooler_output, dim=-1)
        txt = F.normalize(plain.get_text_features(**tok).pooler_output, dim=-1)
        logits = plain(pixel_values=px, **tok).logits_per_image
    want_img, want_txt = ref.embed_images(images), ref.embed_texts(texts)
    assert torch.allclose(img, want_img, atol=1e-5) and torch.allclose(txt, want_txt, atol=1e-5)
    assert torch.allclose(logits, ref.view.logit_scale() * want_img @ want_txt.T, atol=1e-4)

    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "CLIPModel.from_pretrained" in card
    unmerged = [e for e in meta["extras"] if e not in base_sd]  # e.g. soft prompts: kept beside the weights
    side = out / "tunevl_extras.safetensors"
    assert ("Not merged" in card) == bool(unmerged) == side.exists()
    if unmerged:
        assert sorted(load_file(side)) == sorted(unmerged)


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
