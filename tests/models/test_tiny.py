"""Tests for tunevl.models.tiny: deterministic build, save/load, eos pooling, shipped asset."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoProcessor, AutoTokenizer, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

from tunevl.data.synthetic import SyntheticShapes
from tunevl.models.tiny import (
    BUILTIN_MODELS,
    BuiltinModelError,
    build_tiny_clip,
    resolve_builtin,
    save_tiny_clip,
    verify_manifest,
)

TEXTS = ["three red circles", "a photo of a cat sitting on a chair"]


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_clip(seed=0)


@pytest.fixture(scope="module")
def shipped() -> Path:
    return Path(resolve_builtin("tiny-clip"))


def _images(n=3):
    ds = SyntheticShapes(num_samples=n, split="eval")
    return [ds[i]["image"] for i in range(n)]


def _embeds(model, processor, texts=TEXTS, images=None):
    batch = processor(text=texts, images=images or _images(), padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    return out.text_embeds, out.image_embeds


def test_build_is_deterministic_and_leaves_global_rng(tiny):
    state = torch.random.get_rng_state()
    model, processor = build_tiny_clip(seed=0)
    assert torch.equal(state, torch.random.get_rng_state())
    ref = tiny[0].state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert processor.tokenizer.get_vocab() == tiny[1].tokenizer.get_vocab()
    other = build_tiny_clip(seed=1)[0].state_dict()
    assert not torch.equal(other["text_model.embeddings.token_embedding.weight"],
                           ref["text_model.embeddings.token_embedding.weight"])


def test_size_and_config(tiny):
    model, processor = tiny
    n = sum(p.numel() for p in model.parameters())
    assert 100_000 < n < 500_000  # < 2 MB in float32
    tc = model.config.text_config
    tok = processor.tokenizer
    assert (tc.bos_token_id, tc.eos_token_id, tc.pad_token_id) == (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    # eos id 2 would switch transformers' CLIP to argmax pooling (PITFALLS.md).
    assert tc.eos_token_id != 2
    assert tc.vocab_size == len(tok)
    assert isinstance(processor.image_processor, CLIPImageProcessorPil)


def test_tokenizer_appends_eos_pads_right_and_handles_any_text(tiny):
    tok = tiny[1].tokenizer
    texts = ["three red circles", "Zürich ✓ 漢字 émoji 🙂", "", "x" * 500, "  Five   YELLOW\ttriangles\n"]
    batch = tok(texts, padding=True, truncation=True)
    for text, ids, mask in zip(texts, batch["input_ids"], batch["attention_mask"]):
        n = sum(mask)
        assert mask == [1] * n + [0] * (len(mask) - n)  # right padding
        assert ids[0] == tok.bos_token_id and ids[n - 1] == tok.eos_token_id
        assert ids[n:] == [tok.pad_token_id] * (len(ids) - n)
        assert tok.unk_token_id is None or tok.unk_token_id not in ids
        assert max(ids) < len(tok) and len(ids) <= 77
        if len(text) < 70:
            assert tok.decode(ids, skip_special_tokens=True).strip() == text.lower().strip()
    # Task words are single tokens.
    assert len(tok("three red circles")["input_ids"]) == 5


def test_text_pooling_is_at_first_eos(tiny):
    model, processor = tiny
    tok = processor.tokenizer(["one red circle", "a photo of a cat sitting on a chair"], padding=True,
                              return_tensors="pt")
    ids, mask = tok["input_ids"], tok["attention_mask"]
    eos_pos = int(mask[0].sum()) - 1
    assert ids[0, eos_pos] == processor.tokenizer.eos_token_id and eos_pos + 1 < ids.shape[1]
    with torch.no_grad():
        out = model.text_model(input_ids=ids, attention_mask=mask)
        base = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        torch.testing.assert_close(out.pooler_output[0], out.last_hidden_state[0, eos_pos], rtol=0, atol=0)
        # A different token after the eos (in the padding) leaves the embedding unchanged...
        after = ids.clone()
        after[0, eos_pos + 1] = processor.tokenizer.convert_tokens_to_ids("Ġthree")
        same = model.get_text_features(input_ids=after, attention_mask=mask).pooler_output
        torch.testing.assert_close(same, base, rtol=0, atol=1e-6)
        # ...even a high token id, which argmax pooling would pick.
        after[0, eos_pos + 1] = len(processor.tokenizer) - 1
        same = model.get_text_features(input_ids=after, attention_mask=mask).pooler_output
        torch.testing.assert_close(same, base, rtol=0, atol=1e-6)
        # A content token does change it.
        content = ids.clone()
        content[0, 1] = processor.tokenizer.convert_tokens_to_ids("Ġtwo")
        changed = model.get_text_features(input_ids=content, attention_mask=mask).pooler_output
    assert (changed[0] - base[0]).abs().max() > 1e-3
    torch.testing.assert_close(changed[1], base[1], rtol=0, atol=1e-6)


def test_save_and_from_pretrained_roundtrip(tiny, tmp_path):
    model, processor = tiny
    path = save_tiny_clip(tmp_path / "tc", model, processor)
    assert (path / "model.safetensors").is_file()
    assert not list(path.glob("*.bin"))
    ref = _embeds(model, processor)
    loaded = CLIPModel.from_pretrained(path).eval()
    assert loaded.dtype == torch.float32
    for proc in (CLIPProcessor.from_pretrained(path), AutoProcessor.from_pretrained(path)):
        assert isinstance(proc, CLIPProcessor)
        assert isinstance(proc.image_processor, CLIPImageProcessorPil)
        for a, b in zip(_embeds(loaded, proc), ref):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    auto_tok = AutoTokenizer.from_pretrained(path)
    assert auto_tok(TEXTS, padding=True)["input_ids"] == processor.tokenizer(TEXTS, padding=True)["input_ids"]
    assert auto_tok.padding_side == "right"


def test_resolve_builtin_passes_other_names_through():
    assert resolve_builtin("openai/clip-vit-base-patch16") == "openai/clip-vit-base-patch16"
    assert resolve_builtin("./tiny-clip") == "./tiny-clip"
    assert set(BUILTIN_MODELS) == {"tiny-clip"}


def test_shipped_tiny_clip_loads_and_matches_code(shipped, tiny):
    assert shipped.is_absolute() and shipped.is_dir()
    size = sum(p.stat().st_size for p in shipped.iterdir())
    assert size < 3_000_000
    model = CLIPModel.from_pretrained(shipped).eval()
    processor = AutoProcessor.from_pretrained(shipped)
    # Same architecture and tokenizer as build_tiny_clip, i.e. the asset is not stale w.r.t. the code.
    built_model, built_proc = tiny
    assert processor.tokenizer.get_vocab() == built_proc.tokenizer.get_vocab()
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in built_model.state_dict().items()}
    manifest = json.loads((shipped / "MANIFEST.json").read_text())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])


def test_shipped_tiny_clip_is_pretrained(shipped):
    """The base already matches colour and shape on held-out data (chance is about 1/12)."""
    model = CLIPModel.from_pretrained(shipped).eval()
    processor = CLIPProcessor.from_pretrained(shipped)
    ds = SyntheticShapes(num_samples=96, split="eval", seed=0)
    recs = [ds[i] for i in range(len(ds))]
    text, image = _embeds(model, processor, [r["text"] for r in recs], [r["image"] for r in recs])
    sim = F.normalize(text, dim=-1) @ F.normalize(image, dim=-1).t()
    key = [r["text"].split(" ", 1)[1].rstrip("s") for r in recs]  # "red circle"
    hits = [key[j] == key[i] for i, j in enumerate(sim.argmax(1).tolist())]
    assert sum(hits) / len(hits) > 0.5


def test_corrupted_copy_fails_with_clear_error(shipped, tmp_path):
    copy = tmp_path / "tiny-clip"
    shutil.copytree(shipped, copy)
    verify_manifest(copy)  # an intact copy passes
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BuiltinModelError, match=r"model\.safetensors is corrupted"):
        verify_manifest(copy)
    weights.unlink()
    with pytest.raises(BuiltinModelError, match="missing"):
        verify_manifest(copy)
    (copy / "MANIFEST.json").unlink()
    with pytest.raises(BuiltinModelError, match="MANIFEST.json is missing"):
        verify_manifest(copy)
