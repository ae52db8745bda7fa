"""SigLIP family view and tiny SigLIP: HF parity, last-position pooling, LoRA presets, cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoProcessor, SiglipImageProcessorPil, SiglipModel

from tunevl.adapters.lora import apply_lora
from tunevl.data.synthetic import SyntheticShapes
from tunevl.losses import sigmoid_loss
from tunevl.models import FAMILIES, ModelConfig, detect_family, get_family, load_view
from tunevl.models.siglip import SiglipView
from tunevl.models.tiny.siglip import (
    INIT_LOGIT_BIAS,
    INIT_LOGIT_SCALE,
    TINY_SIGLIP_SPEC,
    build_tiny_siglip,
    ensure_tiny_siglip,
    save_tiny_siglip,
)

TEXTS = ["three red circles", "one blue square", "a photo of a cat sitting on a chair next to the window " * 6, ""]


@pytest.fixture(scope="module")
def siglip_path(tmp_path_factory) -> str:
    return ensure_tiny_siglip(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def hf(siglip_path):
    return SiglipModel.from_pretrained(siglip_path).eval(), AutoProcessor.from_pretrained(siglip_path)


def _view(path, **kw) -> SiglipView:
    view = load_view(ModelConfig(name_or_path=path, **kw))
    assert isinstance(view, SiglipView)
    return view


def _images(n=4, split="eval"):
    ds = SyntheticShapes(num_samples=n, split=split)
    return [ds[i]["image"] for i in range(n)]


# ---- tiny SigLIP ---------------------------------------------------------------------------
def test_build_is_deterministic_and_leaves_global_rng():
    state = torch.random.get_rng_state()
    a, proc = build_tiny_siglip(seed=0)
    assert torch.equal(state, torch.random.get_rng_state())
    b = build_tiny_siglip(seed=0)[0].state_dict()
    for k, v in a.state_dict().items():
        assert torch.equal(v, b[k]), k
    c = build_tiny_siglip(seed=1)[0].state_dict()
    key = "text_model.embeddings.token_embedding.weight"
    assert not torch.equal(c[key], b[key])
    assert a.logit_scale.shape == a.logit_bias.shape == (1,)  # no 0-dim parameter for DeepSpeed
    assert a.logit_scale.item() == pytest.approx(INIT_LOGIT_SCALE) and a.logit_bias.item() == INIT_LOGIT_BIAS
    assert isinstance(proc.image_processor, SiglipImageProcessorPil)
    assert 100_000 < sum(p.numel() for p in a.parameters()) < 600_000


def test_tokenizer_puts_eos_at_the_pooled_last_position(hf):
    """SigLIP pools position -1; with max_length padding by eos it always holds eos, even truncated."""
    tok = hf[1].tokenizer
    n = TINY_SIGLIP_SPEC["max_position_embeddings"]
    out = tok(TEXTS, padding="max_length", truncation=True, max_length=n)
    assert set(out) == {"input_ids"}  # SigLIP uses no attention mask
    for text, ids in zip(TEXTS, out["input_ids"]):
        assert len(ids) == n and ids[-1] == tok.eos_token_id
        body = tok(text)["input_ids"]
        assert body[-1] == tok.eos_token_id and tok.eos_token_id not in body[:-1]  # no bos, eos appended
    assert tok.pad_token_id == tok.eos_token_id == hf[0].config.text_config.eos_token_id
    assert len(tok(TEXTS[2])["input_ids"]) > n  # the long text really is truncated above


def test_view_embeddings_equal_hf_features(siglip_path, hf):
    model, proc = hf
    view = _view(siglip_path)
    images = _images()
    with torch.no_grad():
        batch = proc(text=TEXTS, images=images, padding="max_length", truncation=True, return_tensors="pt")
        want_img = F.normalize(model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output, dim=-1)
        want_txt = F.normalize(model.get_text_features(input_ids=batch["input_ids"]).pooler_output, dim=-1)
        got_img = view.encode_images(view.preprocess_images(images))
        tok = view.tokenize(TEXTS)
        got_txt = view.encode_texts(**tok)
        logits = model(**batch).logits_per_image
    assert set(tok) == {"input_ids"} and tok["input_ids"].shape == (len(TEXTS), TINY_SIGLIP_SPEC["max_position_embeddings"])
    torch.testing.assert_close(got_img, want_img, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_txt, want_txt, rtol=0, atol=1e-6)
    mine = view.logit_scale() * got_img @ got_txt.T + view.logit_bias()
    torch.testing.assert_close(mine, logits, rtol=1e-5, atol=1e-5)
    # Short texts alone still pad to max_length; padding to the longest text instead would
    # pool another position and give other embeddings.
    short = view.tokenize(TEXTS[:2])["input_ids"]
    assert short.shape == (2, TINY_SIGLIP_SPEC["max_position_embeddings"])
    longest = view.processor.tokenizer(TEXTS[:2], padding=True, return_tensors="pt")["input_ids"]
    assert longest.shape[1] < short.shape[1]
    with torch.no_grad():
        torch.testing.assert_close(view.encode_texts(short), want_txt[:2], rtol=0, atol=1e-6)
        assert not torch.allclose(view.encode_texts(longest), want_txt[:2], atol=1e-3)


def test_saved_model_reloads_identically(tmp_path, hf):
    model, proc = build_tiny_siglip(seed=0)
    path = save_tiny_siglip(tmp_path / "s", model, proc)
    again = SiglipModel.from_pretrained(path).eval()
    batch = proc(text=TEXTS, images=_images(), padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        a, b, c = model(**batch), again(**batch), hf[0](**batch)
    assert torch.equal(a.logits_per_image, b.logits_per_image)
    assert torch.equal(a.logits_per_image, c.logits_per_image)  # the cached copy is the same model
    reloaded = AutoProcessor.from_pretrained(path)
    assert reloaded.tokenizer(TEXTS)["input_ids"] == proc.tokenizer(TEXTS)["input_ids"]


def test_ensure_caches_verifies_and_rebuilds(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEVL_CACHE", str(tmp_path / "env"))
    path = Path(ensure_tiny_siglip())
    assert path == tmp_path / "env" / "tiny-siglip"
    weights = path / "model.safetensors"
    original, stamp = weights.read_bytes(), weights.stat().st_mtime_ns
    assert Path(ensure_tiny_siglip()) == path and weights.stat().st_mtime_ns == stamp  # reused, not rebuilt
    weights.write_bytes(original[:-8] + b"\0" * 8)  # corrupt
    assert Path(ensure_tiny_siglip()) == path
    assert weights.read_bytes() == original  # rebuilt byte for byte (deterministic)
    manifest = json.loads((path / "MANIFEST.json").read_text())
    assert manifest["architecture"] == TINY_SIGLIP_SPEC
    other = ensure_tiny_siglip(tmp_path / "arg")  # an explicit cache_dir wins over the env
    assert Path(other) == tmp_path / "arg" / "tiny-siglip"
    assert (Path(other) / "model.safetensors").read_bytes() == original
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tiny-siglip-")]  # no temp leftovers


def test_builtin_alias_when_hooked(tmp_path, monkeypatch):
    from tunevl.models.tiny import resolve_builtin

    monkeypatch.setenv("TUNEVL_CACHE", str(tmp_path))
    if resolve_builtin("tiny-siglip") == "tiny-siglip":
        pytest.skip("resolve_builtin has no tiny-siglip hook yet")
    assert resolve_builtin("tiny-siglip") == ensure_tiny_siglip()
    assert detect_family("tiny-siglip") == "siglip"


# ---- registry, extras ----------------------------------------------------------------------
def test_registry_detects_and_loads(siglip_path):
    assert FAMILIES["siglip"].view == "tunevl.models.siglip:SiglipView"
    assert get_family("siglip") is SiglipView
    assert detect_family(siglip_path) == "siglip"  # from config.json, not the name
    renamed = Path(siglip_path).parent / "some-model"
    if not renamed.exists():
        renamed.symlink_to(siglip_path)
    assert detect_family(str(renamed)) == "siglip"
    assert detect_family("google/siglip-base-patch16-224") is None  # not cached: the repo name is never guessed from


def test_train_logit_scale_trains_scale_and_bias(siglip_path):
    frozen = _view(siglip_path)
    assert frozen.extra_trainables() == {}
    assert not any(p.requires_grad for p in frozen.model.parameters())
    view = _view(siglip_path, train_logit_scale=True)
    extras = view.extra_trainables()
    assert set(extras) == {"logit_scale", "logit_bias"}
    assert [n for n, p in view.model.named_parameters() if p.requires_grad] == ["logit_scale", "logit_bias"]
    assert {id(p) for p in view.external_parameters()} == {id(p) for p in extras.values()}
    view.load_extras({"logit_scale": torch.tensor(3.0), "logit_bias": torch.tensor([-5.0])})
    assert view.logit_scale().item() == pytest.approx(torch.tensor(3.0).exp().item())
    assert view.logit_bias().tolist() == [-5.0] and view.logit_bias().dtype == torch.float32
    with pytest.raises(ValueError, match="unknown extra tensor 'temperature' for the siglip family"):
        view.load_extras({"temperature": torch.zeros(1)})


# ---- LoRA presets --------------------------------------------------------------------------
def _lora_grads(path, targets) -> dict[str, torch.Tensor | None]:
    """One sigmoid-loss backward with LoRA on ``targets``; the gradient of every LoRA tensor."""
    view = _view(path, train_logit_scale=True)
    # Random lora_B (init_lora_weights=False), so lora_A gets a gradient on the first step too.
    apply_lora(view, {"r": 4, "lora_alpha": 8, "target_modules": targets, "init_lora_weights": False})
    view.model.train()
    img = view.encode_images(view.preprocess_images(_images(6, "train")))
    txt = view.encode_texts(**view.tokenize([f"{w} shapes" for w in "one two three four five six".split()]))
    sigmoid_loss(img, txt, view.logit_scale(), view.logit_bias()).backward()
    return {n: p.grad for n, p in view.model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("preset", sorted(SiglipView.lora_presets))
def test_preset_skips_pooling_head_and_every_lora_gets_gradient(siglip_path, preset):
    grads = _lora_grads(siglip_path, preset)
    expected = {"text-attention": 12, "vision-attention": 12, "attention": 24, "all-linear": 36}[preset]
    assert len(grads) == 2 * expected  # lora_A and lora_B per module: 3 layers x q/k/v/out (+ fc1/fc2)
    assert not [n for n in grads if ".head." in n]
    dead = [n for n, g in grads.items() if g is None or not g.abs().sum() > 0]
    assert dead == []


def test_lora_on_the_pooling_head_would_be_dead(siglip_path):
    """The check above can fail: LoRA on the MultiheadAttention's out_proj gets no gradient."""
    grads = _lora_grads(siglip_path, ["vision_model.head.attention.out_proj", "text_model.head"])
    dead = sorted(n for n, g in grads.items() if g is None or not g.abs().sum() > 0)
    assert dead and all("vision_model.head.attention.out_proj" in n for n in dead)
    assert any("text_model.head" in n for n in grads) and len(dead) == 2


def test_all_linear_preset_overrides_peft_all_linear(siglip_path):
    """peft's own "all-linear" would reach the pooling head; the family preset replaces it."""
    view = _view(siglip_path)
    apply_lora(view, {"r": 2, "target_modules": "all-linear"})
    names = [n for n, _ in view.model.named_modules() if n.endswith("lora_A")]
    assert names and not [n for n in names if ".head." in n]
