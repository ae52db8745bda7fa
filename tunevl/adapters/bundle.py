"""The adapter bundle: a folder that ``tunevl.load`` and, for LoRA-only bundles, plain peft can load.

Layout::

    adapter_config.json, adapter_model.safetensors   peft's files (when LoRA is used)
    tunevl_extras.safetensors                          other trainables (logit scale, soft prompts, ...)
    recipe.yaml                                        the resolved recipe
    tunevl.json                                        format version, family, base model + config hash, versions
    README.md                                          model card
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import torch

from tunevl.errors import BundleError

FORMAT_VERSION = 1
EXTRAS_FILE = "tunevl_extras.safetensors"
META_FILE = "tunevl.json"
RECIPE_FILE = "recipe.yaml"
_VOLATILE_CONFIG_KEYS = {"transformers_version", "_name_or_path", "dtype", "torch_dtype", "_commit_hash"}


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in _VOLATILE_CONFIG_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def config_sha256(name_or_path: str, revision: str | None = None) -> str:
    """Hash of the base model's config.json, ignoring fields that change with library versions."""
    import hashlib

    from transformers.utils import cached_file

    from tunevl.models.tiny import resolve_builtin

    path = cached_file(resolve_builtin(name_or_path), "config.json", revision=revision)
    canonical = json.dumps(_strip(json.loads(Path(path).read_text())), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def versions() -> dict[str, str]:
    import peft
    import transformers

    import tunevl

    return {"tunevl": tunevl.__version__, "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def git_sha() -> str | None:
    """The tunevl checkout's commit, when tunevl runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def save_bundle(
    out_dir: str | Path,
    view,
    *,
    lora_state: dict[str, torch.Tensor] | None,
    extras: dict[str, torch.Tensor],
    recipe_yaml: str,
    model_config,
    card: str | None = None,
) -> Path:
    """Write a bundle. ``lora_state`` uses the peft model's own state-dict keys."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    adapters = []
    if lora_state is not None:
        view.model.save_pretrained(out, state_dict=lora_state, save_embedding_layers=False)
        adapters.append("lora")
    if extras:
        # Bundles store the logit scale in the 0-dim shape of the original checkpoint.
        tensors = {k: (v.reshape(()) if k == "logit_scale" else v).contiguous() for k, v in extras.items()}
        save_file(tensors, out / EXTRAS_FILE, metadata={"format": "pt"})
    (out / RECIPE_FILE).write_text(recipe_yaml)
    meta = {
        "format_version": FORMAT_VERSION,
        "family": view.family,
        "base_model": {
            "name_or_path": model_config.name_or_path,
            "revision": model_config.revision,
            "config_sha256": config_sha256(model_config.name_or_path, model_config.revision),
        },
        "adapters": adapters,
        "extras": sorted(extras),
        "versions": versions(),
        "git_sha": git_sha(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if card is not None:
        (out / "README.md").write_text(card)
    return out


def read_meta(bundle: Path) -> dict:
    path = bundle / META_FILE
    if not path.is_file():
        raise BundleError(f"{bundle}: not a tunevl bundle (no {META_FILE})")
    meta = json.loads(path.read_text())
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {version!r} is newer than this tunevl understands ({FORMAT_VERSION}); upgrade tunevl"
        )
    return meta


def load_bundle(path: str | Path, *, revision: str | None = None, trust_remote_code: bool = False, check_base: bool = True):
    """Rebuild the family view of a bundle (base model + adapters + extras), in eval mode."""
    from safetensors.torch import load_file

    from tunevl.models import ModelConfig, load_view

    bundle = _local_bundle(path, revision)
    meta = read_meta(bundle)
    base = meta["base_model"]
    cfg = ModelConfig(
        name_or_path=base["name_or_path"], revision=base.get("revision"), family=meta["family"],
        trust_remote_code=trust_remote_code,
    )
    if check_base:
        found = config_sha256(cfg.name_or_path, cfg.revision)
        if found != base["config_sha256"]:
            raise BundleError(
                f"{bundle}: base model {cfg.name_or_path!r} does not match the one this bundle was trained on "
                f"(config hash {found[:12]} != recorded {base['config_sha256'][:12]})"
            )
    view = load_view(cfg)
    if "lora" in meta["adapters"]:
        _load_lora(view, bundle)
    if meta.get("extras"):
        view.load_extras(load_file(bundle / EXTRAS_FILE))
    view.model.eval()
    return view


def _load_lora(view, bundle: Path) -> None:
    from peft import PeftModel
    from safetensors import safe_open

    try:
        view.model = PeftModel.from_pretrained(view.model, bundle, is_trainable=False)
    except ValueError as err:  # peft: "Target modules ... not found in the base model"
        raise BundleError(f"{bundle}: the LoRA adapter does not fit the base model: {err}") from err
    with safe_open(bundle / "adapter_model.safetensors", "pt") as f:
        saved = len(list(f.keys()))
    loaded = sum(1 for n, _ in view.model.named_parameters() if "lora_" in n)
    if saved == 0 or loaded != saved:
        raise BundleError(f"{bundle}: the adapter holds {saved} LoRA tensors but {loaded} matched the base model")


def _local_bundle(path: str | Path, revision: str | None) -> Path:
    p = Path(path)
    if p.is_dir():
        return p
    if p.exists() or str(path).startswith((".", "/")) or str(path).count("/") != 1:
        raise BundleError(f"{path}: no such bundle folder")
    from huggingface_hub import snapshot_download

    # Bundles from the Hub: safetensors and metadata only, never pickles.
    allow = ["*.json", "*.safetensors", "*.yaml", "*.md", "*.txt"]
    return Path(snapshot_download(str(path), revision=revision, allow_patterns=allow))
