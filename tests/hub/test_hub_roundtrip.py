"""Push -> load by repo id, for every adapter kind (the ``kind`` fixture: ``BUNDLE_KINDS`` in conftest.py)."""

from __future__ import annotations

import json
import logging
import re
import shutil

import torch

import tunevl
from tunevl.data.synthetic import SyntheticShapes
from tunevl.hub import push
from tunevl.models import ModelConfig, load_view


def _probe():
    ds = SyntheticShapes(num_samples=6, split="eval")
    return [ds[i]["image"] for i in range(6)], [ds[i]["text"] for i in range(6)]


def _outputs(model):
    images, texts = _probe()
    return model.embed_images(images), model.embed_texts(texts), model.view.logit_scale()


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
    repo = f"tester/roundtrip-{kind.replace('+', '-')}"

    url = push(bundle, repo)
    assert url.startswith(hub.endpoint) and repo in url
    uploaded = set(hub.files(repo))
    meta = json.loads((bundle / "tunevl.json").read_text())
    expected = {"README.md", "adapter_config.json", "adapter_model.safetensors", "tunevl.json", "recipe.yaml",
                "metrics.json", "loss_curve.png", ".gitattributes"}
    if meta["extras"]:
        expected.add("tunevl_extras.safetensors")
    assert uploaded == expected
    for name in expected - {"README.md", ".gitattributes"}:
        assert hub.files(repo)[name] == (bundle / name).read_bytes(), name

    from_hub, local = tunevl.load(repo), tunevl.load(bundle)
    assert any(r.startswith("GET /tester/roundtrip") and r.endswith("adapter_model.safetensors") for r in hub.log)
    for got, want in zip(_outputs(from_hub), _outputs(local)):
        assert torch.equal(got, want)
    # The adapter is live: the loaded model differs from the plain base.
    images, _ = _probe()
    base = load_view(ModelConfig(meta["base_model"]["name_or_path"]))
    with torch.no_grad():
        plain = base.encode_images(base.preprocess_images(images))
    assert not torch.allclose(plain, from_hub.embed_images(images), atol=1e-4)

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
    repo = f"tester/card-{kind.replace('+', '-')}"
    push(bundle, repo, license="apache-2.0")
    card = hub.files(repo)["README.md"].decode()
    data = ModelCard(card).data.to_dict()
    meta = json.loads((bundle / "tunevl.json").read_text())
    base = meta["base_model"]["name_or_path"]
    assert data["library_name"] == "tunevl" and data["license"] == "apache-2.0"
    assert {"tunevl", "clip", "lora", "contrastive"} <= set(data["tags"])
    assert "base_model" not in data  # a local folder is no Hub id; the body names it instead
    assert f"`{base}`" in card and "## What was trained" in card and "## Results" in card
    assert "r=8" in card and "synthetic_shapes" in card and "i2t_R@1" in card
    assert (bundle / "recipe.yaml").read_text().rstrip() in card

    # The copy-paste snippets run as printed.
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64), (200, 30, 30)).save("cat.jpg")
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    namespace: dict = {}
    exec(blocks[0], namespace)  # the tunevl.load(repo) block
    assert namespace["probs"].shape == (1, 2) and namespace["image_embeds"].shape[0] == 1
    want = tunevl.load(bundle).embed_images(["cat.jpg"])
    assert torch.equal(namespace["image_embeds"], want)
    if meta["extras"]:
        assert "PeftModel" not in card and "silently miss `logit_scale`" in card
    else:  # LoRA-only: plain peft straight from the Hub repo gives the same image features
        peft_block = next(b for b in blocks if "PeftModel" in b)
        exec(peft_block, namespace)
        pixel = tunevl.load(bundle).view.preprocess_images(["cat.jpg"])
        with torch.no_grad():
            feats = namespace["model"].get_image_features(pixel_values=pixel).pooler_output
        assert torch.allclose(torch.nn.functional.normalize(feats, dim=-1), want, atol=1e-6)


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
