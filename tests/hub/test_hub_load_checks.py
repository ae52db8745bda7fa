"""Loading refuses what would silently misbehave: foreign bases, unmatched LoRA, newer formats, pickles."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import tunevl
from tunevl.adapters.bundle import FORMAT_VERSION
from tunevl.errors import BundleError
from tunevl.hub import HubError, push


@pytest.fixture
def bundle(bundle_of, tmp_path):
    """A private copy of the LoRA + logit-scale bundle, free to break."""
    return shutil.copytree(bundle_of("lora+logit_scale"), tmp_path / "bundle")


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    for dotted, value in changes.items():
        node, *keys = [data, *dotted.split("__")]
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    path.write_text(json.dumps(data))


def _other_base(tmp_path):
    """A tiny CLIP whose config differs from the training base in one field."""
    from tunevl.models.tiny import build_tiny_clip, save_tiny_clip

    model, processor = build_tiny_clip(seed=0)
    model.config.logit_scale_init_value = 1.0
    path = tmp_path / "other-base"
    save_tiny_clip(path, model, processor)
    return str(path)


def test_lora_targets_that_match_nothing_fail(bundle):
    _edit_json(bundle / "adapter_config.json", target_modules=["no_such_proj"])
    with pytest.raises(BundleError, match="does not fit the base model"):
        tunevl.load(bundle)


@pytest.mark.filterwarnings("ignore:Found missing adapter keys")
def test_lora_tensors_that_match_no_module_fail(bundle):
    # A module renamed by a library upgrade: peft would only warn and leave a no-op adapter.
    tensors = load_file(bundle / "adapter_model.safetensors")
    renamed = {k.replace("q_proj", "query"): v for k, v in tensors.items()}
    save_file(renamed, bundle / "adapter_model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BundleError, match=r"\d+ of \d+ saved LoRA tensors match no module.*query"):
        tunevl.load(bundle)


def test_narrowed_lora_targets_fail(bundle):
    _edit_json(bundle / "adapter_config.json", target_modules=r"text_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|v_proj)")
    with pytest.raises(BundleError, match="match no module"):
        tunevl.load(bundle)


def test_a_different_base_model_fails(bundle, tmp_path):
    other = _other_base(tmp_path)
    with pytest.raises(BundleError, match=r"base model '.*other-base' does not match .* config hash"):
        tunevl.load(bundle, base_model=other)
    _edit_json(bundle / "tunevl.json", base_model__name_or_path=other)
    with pytest.raises(BundleError, match=r"does not match the one this bundle was trained on"):
        tunevl.load(bundle)


def test_a_different_base_revision_fails(bundle):
    _edit_json(bundle / "tunevl.json", base_model__revision="v1")
    with pytest.raises(BundleError, match=r"trained on .* at revision 'v1', not revision 'v2'"):
        tunevl.load(bundle, base_revision="v2")


def test_missing_base_is_clear_and_a_copy_loads_anywhere(bundle, tiny_clip_path):
    want = tunevl.load(bundle).embed_texts(["three red circles"])
    _edit_json(bundle / "tunevl.json", base_model__name_or_path="/nonexistent/tiny-clip")
    with pytest.raises(BundleError, match=r"cannot read the config of base model '/nonexistent/tiny-clip'.*base_model="):
        tunevl.load(bundle)
    got = tunevl.load(bundle, base_model=tiny_clip_path).embed_texts(["three red circles"])
    assert torch.equal(got, want)


def test_newer_format_version_fails(bundle):
    _edit_json(bundle / "tunevl.json", format_version=FORMAT_VERSION + 1)
    with pytest.raises(BundleError, match=f"format_version {FORMAT_VERSION + 1} is newer .* upgrade tunevl"):
        tunevl.load(bundle)
    with pytest.raises(BundleError, match="newer"):
        push(bundle, "tester/never")


def test_only_safetensors_are_read(bundle):
    (bundle / "adapter_model.safetensors").rename(bundle / "adapter_model.bin")
    with pytest.raises(BundleError, match=r"missing adapter_model.safetensors .*only safetensors"):
        tunevl.load(bundle)


def test_pickles_in_a_hub_repo_are_never_downloaded(hub, bundle):
    push(bundle, "tester/with-pickle")
    repo = hub.repos["tester/with-pickle"]
    files = dict(repo["commits"][repo["branches"]["main"]])
    files["adapter_model.bin"] = b"not read"
    files["training_state/rng.pt"] = b"not read"
    hub._commit(repo, "main", files)
    tunevl.load("tester/with-pickle")
    fetched = [r for r in hub.log if "/resolve/" in r and "with-pickle" in r]
    assert fetched and not any(r.endswith((".bin", ".pt")) for r in fetched)


def test_trust_remote_code_only_when_passed(bundle, monkeypatch):
    import tunevl.models as models

    seen, real = [], models.load_view
    monkeypatch.setattr(models, "load_view", lambda cfg, **kw: seen.append(cfg.trust_remote_code) or real(cfg, **kw))
    tunevl.load(bundle)
    tunevl.load(bundle, trust_remote_code=True)
    assert seen == [False, True]


def test_missing_repo_and_revision_are_clear_errors(hub):
    with pytest.raises(BundleError, match=r"tester/nope: not a local folder, and no model repo 'tester/nope' on http://127"):
        tunevl.load("tester/nope")
    with pytest.raises(BundleError, match="no such bundle folder"):
        tunevl.load("./missing/bundle")


def test_push_token_errors_are_clear_and_never_echo_the_token(hub, bundle, monkeypatch, capsys):
    from tunevl.cli import main

    wrong = "hf_wrongTokenDoNotPrint0123456789"
    monkeypatch.setenv("HF_TOKEN", wrong)
    with pytest.raises(HubError, match=r"rejected the token \(401\)") as info:
        push(bundle, "tester/x")
    assert wrong not in str(info.value)
    assert main(["push", str(bundle), "--repo", "tester/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rejected the token" in err and wrong not in err
    with pytest.raises(BundleError, match="HTTP 401"):
        tunevl.load("tester/x")

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="no Hugging Face token: set HF_TOKEN"):
        push(bundle, "tester/x")
    assert "tester/x" not in hub.repos


def test_push_to_a_foreign_namespace_is_a_clear_error(hub, bundle):
    with pytest.raises(HubError, match=r"someone-else/x: the token may not write there \(403\)"):
        push(bundle, "someone-else/x")


def test_offline_and_uncached_is_a_clear_error():
    # The suite runs with HF_HUB_OFFLINE=1 (tests/conftest.py); nothing of this repo is cached.
    with pytest.raises(BundleError, match="not in the Hub cache while the Hub cannot be reached"):
        tunevl.load("tester/never-downloaded")


def test_unreachable_hub_is_a_clear_push_error(hub, bundle, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(HubError, match=r"tester/x: cannot reach http://127.0.0.1:9 \(ConnectError\)"):
        push(bundle, "tester/x")
