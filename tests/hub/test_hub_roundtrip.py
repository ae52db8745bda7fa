"""Push -> load by repo id, for every adapter kind and family (the ``kind`` fixture: ``BUNDLE_KINDS`` in conftest.py)."""

from __future__ import annotations

import json
import logging
import re
import shutil

import torch
from safetensors.torch import load_file

import tunevl
from tunevl.adapters.card import USAGE_PROMPT
from tunevl.hub import push
from tunevl.models.tiny import BUILT_ON_DEMAND


def _outputs(model):
    """Image/text embeddings and logit scale of a CLIP bundle (for the CLIP-only tests below)."""
    from tunevl.data.synthetic import SyntheticShapes

    ds = SyntheticShapes(num_samples=6, split="eval")
    images, texts = [ds[i]["image"] for i in range(6)], [ds[i]["text"] for i in range(6)]
    return model.embed_images(images), model.embed_texts(texts), model.view.logit_scale()


def _live_extra(view, name: str):
    """The model's tensor that a bundle extra was loaded into."""
    if name.startswith("soft_prompt."):  # the single soft prompt, or a named one (an embedder's image/text prompts)
        return view.extra_trainables()[name]
    if name.startswith(("text_prompts.", "visual_prompts.")):
        return view.prompt_parameters()[name]
    return getattr(view.base_model, name)


def _files_containing(root, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_push_then_load_by_repo_id_matches_local(hub, bundle_of, kind, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_of(kind), bundle)
    # Training leftovers and pickles must never travel.
    (bundle / "checkpoint-1" / "training_state").mkdir(parents=True)
    (bundle / "checkpoint-1" / "training_state" / "rng_rank0.pt").write_bytes(b"pickle")
    (bundle / "stray.bin").write_bytes(b"pickle")
    repo = f"tester/roundtrip-{kind.slug}"

    url = push(bundle, repo)
    assert url.startswith(hub.endpoint) and repo in url
    uploaded = set(hub.files(repo))
    meta = json.loads((bundle / "tunevl.json").read_text())
    expected = {"README.md", "tunevl.json", "recipe.yaml", "metrics.json", "loss_curve.png", ".gitattributes"}
    if "lora" in meta["adapters"]:
        expected |= {"adapter_config.json", "adapter_model.safetensors"}
    if meta["extras"]:
        expected.add("tunevl_extras.safetensors")
    assert uploaded == expected
    for name in expected - {"README.md", ".gitattributes"}:
        assert hub.files(repo)[name] == (bundle / name).read_bytes(), name

    from_hub, local = tunevl.load(repo), tunevl.load(bundle)
    assert type(from_hub) is type(local) and hasattr(local, "generate") == kind.generative
    weights = "adapter_model.safetensors" if "lora" in meta["adapters"] else "tunevl_extras.safetensors"
    assert any(r.startswith(f"GET /{repo}/") and r.endswith(weights) for r in hub.log)
    got = kind.outputs(from_hub)
    kind.assert_same(got, kind.outputs(local))
    if meta["extras"]:  # the side file came from the Hub and is in the model
        saved = load_file(bundle / "tunevl_extras.safetensors")
        assert sorted(saved) == meta["extras"]
        for name, value in saved.items():
            assert torch.equal(_live_extra(from_hub.view, name).detach().reshape(value.shape), value), name
    # The adapter is live: the loaded model differs from the plain base.
    base = kind.base_outputs(meta)
    first = next(iter(got))
    assert not torch.allclose(got[first], base[first], atol=1e-4) or kind.classification
    if kind.classification:  # prompts change what classify computes (text prompts) or the image features (VPT)
        assert not torch.allclose(got["classify"], base["classify"], atol=1e-4)

    # The token was used (so the check below means something) and never stored or logged.
    assert f"Bearer {hub.token}" in hub.seen_auth
    out, err = capsys.readouterr()
    assert hub.token not in caplog.text + out + err
    assert not _files_containing(bundle, hub.token)
    assert not _files_containing(tmp_path / "hub-cache", hub.token)
    assert not any(hub.token.encode() in data for r in hub.repos.values() for c in r["commits"].values() for data in c.values())


def test_pushed_card_parses_names_base_and_its_usage_runs(hub, bundle_of, kind, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard
    from PIL import Image

    bundle = bundle_of(kind)
    repo = f"tester/card-{kind.slug}"
    push(bundle, repo, license="apache-2.0")
    card = hub.files(repo)["README.md"].decode()
    data = ModelCard(card).data.to_dict()
    meta = json.loads((bundle / "tunevl.json").read_text())
    base = meta["base_model"]["name_or_path"]
    assert data["library_name"] == "tunevl" and data["license"] == "apache-2.0"
    assert kind.tags <= set(data["tags"]) and meta["family"] in data["tags"]
    assert data["pipeline_tag"] == kind.pipeline
    assert "base_model" not in data  # a local folder or a tunevl built-in is no Hub id; the body names it instead
    assert f"`{base}`" in card and "## What was trained" in card and "## Results" in card
    assert all(m in card for m in kind.mentions), [m for m in kind.mentions if m not in card]
    assert (bundle / "recipe.yaml").read_text().rstrip() in card
    assert ("local folder" in card) == (base not in BUILT_ON_DEMAND)

    # The copy-paste snippets run as printed.
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64), (200, 30, 30)).save("cat.jpg")
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    namespace: dict = {}
    exec(blocks[0], namespace)  # the tunevl.load(repo) block
    local = tunevl.load(bundle)
    if kind.embedder:  # embeddings as from a CLIP bundle, and still an LVLM that answers
        assert namespace["probs"].shape == (1, 2) and torch.equal(namespace["image_embeds"], local.embed_images(["cat.jpg"]))
        assert torch.equal(namespace["text_embeds"], local.embed_texts(["a photo of a cat"]))
        assert isinstance(namespace["answer"], str) and namespace["answer"] == local.generate(["cat.jpg"], USAGE_PROMPT)
    elif kind.generative:
        assert "embed_images" not in card and f'model.generate(["cat.jpg"], "{USAGE_PROMPT}")' in blocks[0]
        assert isinstance(namespace["answer"], str) and namespace["answer"] == local.generate(["cat.jpg"], USAGE_PROMPT)
        # A tiny model may stop at once: compare some forced tokens too.
        forced = dict(max_new_tokens=6, min_new_tokens=4)
        text = namespace["model"].generate(["cat.jpg"], USAGE_PROMPT, **forced)
        assert text == local.generate(["cat.jpg"], USAGE_PROMPT, **forced)  # (forced tokens may decode to whitespace)
    else:
        assert "generate(" not in card
        assert namespace["probs"].shape == (1, 2) and namespace["image_embeds"].shape[0] == 1
        assert torch.equal(namespace["image_embeds"], local.embed_images(["cat.jpg"]))
    if meta["extras"] and "lora" in meta["adapters"]:
        assert "PeftModel" not in card and f"silently miss `{meta['extras'][0]}`" in card
    elif meta["extras"]:
        assert "PeftModel" not in card and "There is no LoRA adapter here for plain peft" in card
    else:  # LoRA only (projector copies included): plain peft straight from the Hub repo computes the same
        peft_block = next(b for b in blocks if "PeftModel" in b)
        exec(peft_block, namespace)
        plain = namespace["model"].eval()
        if meta["base_model"].get("quantization"):  # plain peft on the unquantised base, as the snippet loads it
            assert "trained with QLoRA on a 4-bit base" in card
            local = tunevl.load(bundle, quantize=False)
        with torch.no_grad():
            if kind.generative:
                batch = local.view.collate(kind.inputs(), {"messages"})
                got, want = plain(**local.view.model_inputs(batch)).logits, local.view.logits(batch)
            else:
                pixel = local.view.preprocess_images(["cat.jpg"])
                got = torch.nn.functional.normalize(plain.get_image_features(pixel_values=pixel).pooler_output, dim=-1)
                want = local.embed_images(["cat.jpg"])
        assert torch.allclose(got, want, atol=1e-6)
    if kind.generative and meta["extras"]:
        assert "cannot be merged" in card and "tunevl_extras.safetensors" in card
    if meta.get("prompts"):  # prompt bundles: classify uses the learned prompts, which cannot merge
        assert "The learned prompts (`" in card and "cannot be merged" in card
        assert ("with the learned prompts, any class names" in card) == bool(meta["prompts"].get("text"))
        assert torch.equal(namespace["probs"], local.classify(["cat.jpg"], ["cat", "dog"]))


def test_card_front_matter_names_a_hub_base_model(bundle_of):
    from huggingface_hub import ModelCard

    from tunevl.adapters.card import make_card

    meta = json.loads((bundle_of("lora") / "tunevl.json").read_text())
    meta["base_model"]["name_or_path"] = "openai/clip-vit-base-patch16"
    card = make_card(meta, (bundle_of("lora") / "recipe.yaml").read_text(), None, repo_id="me/clip-lora")
    data = ModelCard(card).data
    assert data.base_model == "openai/clip-vit-base-patch16" and data.library_name == "tunevl"
    assert data.pipeline_tag == "zero-shot-image-classification" and data.license == "other"
    assert 'CLIPModel.from_pretrained("openai/clip-vit-base-patch16")' in card
    assert 'PeftModel.from_pretrained(base, "me/clip-lora")' in card and "No metrics were recorded." in card


def test_repush_updates_repo_and_branches(hub, bundle_of):
    repo = "tester/repush"
    lora, with_scale = bundle_of("lora"), bundle_of("lora+logit_scale")
    push(lora, repo)
    first = hub.repos[repo]["branches"]["main"]
    assert "tunevl_extras.safetensors" not in hub.files(repo)

    push(with_scale, repo, commit_message="with the logit scale")
    assert hub.repos[repo]["branches"]["main"] != first
    assert hub.files(repo)["tunevl.json"] == (with_scale / "tunevl.json").read_bytes()
    assert hub.files(repo)["tunevl_extras.safetensors"] == (with_scale / "tunevl_extras.safetensors").read_bytes()
    for got, want in zip(_outputs(tunevl.load(repo)), _outputs(tunevl.load(with_scale))):
        assert torch.equal(got, want)

    # Pushing the LoRA-only bundle again removes the now stale extras; other branches are separate.
    push(lora, repo)
    assert "tunevl_extras.safetensors" not in hub.files(repo)
    push(with_scale, repo, revision="scale")
    assert "tunevl_extras.safetensors" in hub.files(repo, "scale")
    assert "tunevl_extras.safetensors" not in hub.files(repo, "main")
    for got, want in zip(_outputs(tunevl.load(repo, revision="scale")), _outputs(tunevl.load(with_scale))):
        assert torch.equal(got, want)


def test_push_keeps_a_card_the_user_wrote(hub, bundle_of, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_of("lora"), bundle)
    (bundle / "README.md").write_text("---\nlicense: mit\n---\n# My adapter\n")
    push(bundle, "tester/own-card")
    assert hub.files("tester/own-card")["README.md"] == b"---\nlicense: mit\n---\n# My adapter\n"


def test_bare_repo_name_goes_to_the_token_owner(hub, bundle_of):
    push(bundle_of("lora"), "bare-name", private=True)
    assert hub.repos["tester/bare-name"]["private"] is True


def test_cli_push_prints_the_commit_url(hub, bundle_of, capsys):
    from tunevl.cli import main

    assert main(["push", str(bundle_of("lora")), "--repo", "tester/cli", "--license", "mit"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"{hub.endpoint}/tester/cli/commit/")
    assert "license: mit" in hub.files("tester/cli")["README.md"].decode()


def test_card_of_a_builtin_base_has_runnable_plain_snippets(bundle_of):
    from tunevl.adapters.card import make_card

    meta = json.loads((bundle_of("lora") / "tunevl.json").read_text())
    meta["base_model"]["name_or_path"] = "tiny-clip"
    card = make_card(meta, None, None, repo_id="me/tiny")
    assert "local folder" not in card and "base_model:" not in card
    peft_block = next(b for b in re.findall(r"```python\n(.*?)```", card, re.S) if "PeftModel" in b)
    namespace: dict = {}
    exec(peft_block.split("model = PeftModel")[0], namespace)  # the base loads with plain transformers
    assert type(namespace["base"]).__name__ == "CLIPModel"


def test_card_of_an_lvlm_on_a_hub_base(bundle_of):
    from huggingface_hub import ModelCard

    from tunevl.adapters.card import make_card, make_merged_card

    meta = json.loads((bundle_of("llava:lora+projector") / "tunevl.json").read_text())
    meta["base_model"]["name_or_path"] = "llava-hf/llava-1.5-7b-hf"
    card = make_card(meta, None, None, repo_id="me/llava-lora")
    data = ModelCard(card).data
    assert data.base_model == "llava-hf/llava-1.5-7b-hf" and data.pipeline_tag == "image-text-to-text"
    assert {"tunevl", "llava", "lora"} <= set(data.tags)
    assert 'LlavaForConditionalGeneration.from_pretrained("llava-hf/llava-1.5-7b-hf")' in card
    assert 'PeftModel.from_pretrained(base, "me/llava-lora")' in card and 'AutoProcessor.from_pretrained("merged")' in card
    assert "embed_images" not in card and "classify" not in card

    meta = json.loads((bundle_of("qwen2_vl:soft_prompt+lora") / "tunevl.json").read_text())
    meta["base_model"]["name_or_path"] = "Qwen/Qwen2-VL-2B-Instruct"
    card = make_card(meta, None, None, repo_id="me/qwen-sp")
    assert "PeftModel" not in card and "soft-prompt" in ModelCard(card).data.tags
    assert "`soft_prompt.after_image`) is not a weight of the model and cannot be merged" in card
    merged = make_merged_card(meta, None, "me/qwen-sp", "tunevl_extras.safetensors", ["soft_prompt.after_image"])
    assert 'Qwen2VLForConditionalGeneration.from_pretrained("path/to/this/folder")' in merged
    assert "## Not merged" in merged and "does not compute what the bundle does" in merged
