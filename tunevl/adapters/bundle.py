"""The adapter bundle: a folder that ``tunevl.load`` and, for LoRA-only bundles, plain peft can load.

Layout::

    adapter_config.json, adapter_model.safetensors   peft's files (when LoRA is used)
    tunevl_extras.safetensors                          other trainables (logit scale, soft prompts, CoOp/VPT prompts, ...)
    recipe.yaml                                        the resolved recipe
    tunevl.json                                        format version, family, base model + config hash, versions
                                                       (and the embedding prompts of an LVLM embedder)
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
    location: str | Path | None = None,
) -> Path:
    """Write a bundle. ``lora_state`` uses the peft model's own state-dict keys.

    ``tunevl.json`` also records the shapes of prompt adapters (``prompts``, so loading can rebuild them)
    and ``view.train_data_info`` when the training loop set it (``train_data``: class names, few-shot draw).
    ``card`` is the model card; None writes tunevl's card for the bundle without results (never
    peft's placeholder). ``location`` is where the bundle will be read from, for the card's
    snippets, when ``out_dir`` is a temporary folder (``checkpoint-N.tmp`` defaults to ``checkpoint-N``).
    """
    from safetensors.torch import save_file

    from tunevl.adapters.card import is_portable, make_card
    from tunevl.adapters.prompts import prompt_metadata

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    adapters = []
    if lora_state is not None:
        view.model.save_pretrained(out, state_dict=lora_state, save_embedding_layers=False)
        if is_portable(model_config.name_or_path):  # a Hub id or built-in, not this machine's resolved path
            config_file = out / "adapter_config.json"
            adapter_config = json.loads(config_file.read_text())
            adapter_config["base_model_name_or_path"] = model_config.name_or_path
            config_file.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
        adapters.append("lora")
    if extras:
        # Bundles store extras in the shapes of the original checkpoint (CLIP's 0-dim logit scale).
        shapes = getattr(view, "original_shapes", {})
        tensors = {k: (v.reshape(shapes[k]) if k in shapes else v).contiguous() for k, v in extras.items()}
        save_file(tensors, out / EXTRAS_FILE, metadata={"format": "pt"})
    (out / RECIPE_FILE).write_text(recipe_yaml)
    meta = {
        "format_version": FORMAT_VERSION,
        "family": view.family,
        "base_model": {
            "name_or_path": model_config.name_or_path,
            "revision": model_config.revision,
            "config_sha256": config_sha256(model_config.name_or_path, model_config.revision),
            # what the processor was told at training time (Qwen2-VL's image-token budget, truncation)
            "processor_kwargs": getattr(model_config, "processor_kwargs", None),
            "max_length": getattr(model_config, "max_length", None),
            # QLoRA: the base was 4-bit; the LoRA itself is plain and loads on the unquantised base too
            "quantization": getattr(model_config, "quantization", None),
        },
        "adapters": adapters,
        "extras": sorted(extras),
        **({"embedding_prompts": view.embedding_prompts.to_dict()} if getattr(view, "embedding_prompts", None) else {}),
        "versions": versions(),
        "git_sha": git_sha(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    prompts = prompt_metadata(view)
    if prompts:
        meta["prompts"] = prompts
    if getattr(view, "train_data_info", None):
        meta["train_data"] = view.train_data_info
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if card is None:
        card = make_card(meta, recipe_yaml, None, location=location or out.with_name(out.name.removesuffix(".tmp")))
    (out / "README.md").write_text(card)
    return out


def read_meta(bundle: Path) -> dict:
    path = bundle / META_FILE
    if not path.is_file():
        raise BundleError(f"{bundle}: not a tunevl bundle (no {META_FILE})")
    meta = read_json_file(path, BundleError)
    if not isinstance(meta, dict) or not isinstance(meta.get("base_model"), dict):
        raise BundleError(f"{path}: not a tunevl.json (expected an object with format_version, family, base_model)")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise BundleError(f"{path}: no valid format_version (got {version!r})")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {version!r} is newer than this tunevl understands ({FORMAT_VERSION}); upgrade tunevl"
        )
    return meta


def load_bundle(
    path: str | Path,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    check_base: bool = True,
    base_model: str | None = None,
    base_revision: str | None = None,
    torch_dtype: torch.dtype | None = None,
    quantize: bool = True,
):
    """Rebuild the family view of a bundle (base model + adapters + extras), in eval mode.

    Args:
        path: A bundle folder or a Hub repo id.
        revision: Hub revision of the bundle.
        trust_remote_code: Allow code shipped with the base checkpoint to run.
        check_base: Refuse a base model whose config hash (or revision) differs from the recorded one.
        base_model: Load the adapters onto this copy of the base instead of the recorded id or path
            (for example a local folder, when the bundle was trained elsewhere).
        base_revision: Revision of ``base_model`` (default: the recorded one when the id is the recorded id).
        torch_dtype: Load the base in this dtype (default: the family's choice, bf16 for LVLMs on a GPU).
        quantize: A bundle trained with QLoRA loads on its base quantised as in training; False loads the
            unquantised base (the LoRA is plain and fits either).
    """
    from tunevl.errors import context
    from tunevl.models import ModelConfig, load_view

    bundle = _local_bundle(path, revision)
    meta = read_meta(bundle)
    name, base_rev = _base_config(bundle, meta, base_model, base_revision, check_base)
    with context(f"{bundle}: loading its base model {name!r}"):
        view = load_view(
            ModelConfig(
                name_or_path=name, revision=base_rev, family=meta["family"], trust_remote_code=trust_remote_code,
                processor_kwargs=meta["base_model"].get("processor_kwargs"), max_length=meta["base_model"].get("max_length"),
                quantization=meta["base_model"].get("quantization") if quantize else None,
            ),
            torch_dtype=torch_dtype,
        )
    if "lora" in meta["adapters"]:
        _load_lora(view, bundle)
    if meta.get("prompts"):  # rebuilt with the recorded shapes; their tensors are extras
        from tunevl.adapters.prompts import restore_prompts

        restore_prompts(view, meta["prompts"])
    if meta.get("extras"):
        extras = read_safetensors(_safetensors(bundle, EXTRAS_FILE))
        missing = set(meta["extras"]) - set(extras)
        if missing:
            raise BundleError(f"{bundle}: {EXTRAS_FILE} lacks {sorted(missing)}, listed in {META_FILE}")
        view.load_extras(extras)
    if meta.get("embedding_prompts") is not None:  # an LVLM embedder (VladVA): tunevl.load gives an Embedder
        from tunevl.adapters.embedding_prompts import apply_embedding_prompts

        apply_embedding_prompts(view, meta["embedding_prompts"], from_bundle=True)
    view.model.eval()
    return view


def _base_config(bundle: Path, meta: dict, base_model, base_revision, check: bool) -> tuple[str, str | None]:
    """The base model to load, after checking it is the one the bundle was trained on."""
    recorded = meta["base_model"]
    rec_name, rec_rev = recorded["name_or_path"], recorded.get("revision")
    name = base_model or rec_name
    revision = base_revision if base_revision is not None else (rec_rev if name == rec_name else None)
    if not check:
        return name, revision
    trained_on = f"{rec_name!r}" + (f" at revision {rec_rev!r}" if rec_rev else "")
    if name == rec_name and rec_rev and revision != rec_rev:
        raise BundleError(f"{bundle}: the bundle was trained on {trained_on}, not revision {revision!r}")
    try:
        found = config_sha256(name, revision)
    except (OSError, ValueError) as err:
        hint = "" if base_model else "; pass base_model= (CLI: --base-model) with a copy of it"
        raise BundleError(f"{bundle}: cannot read the config of base model {name!r} ({err.__class__.__name__}){hint}") from err
    if found != recorded["config_sha256"]:
        other = "" if name == rec_name else f" {name!r}"
        raise BundleError(
            f"{bundle}: base model{other} does not match the one this bundle was trained on ({trained_on}): "
            f"config hash {found[:12]} != recorded {recorded['config_sha256'][:12]}"
        )
    return name, revision


def read_json_file(path: Path, error=BundleError):
    """A JSON file, or ``error`` naming the file and line when it is truncated or corrupt."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text ({err.reason})") from None
    except ValueError as err:
        raise error(f"{path}:{err.lineno}: corrupt or truncated JSON ({err.msg})") from None


def read_safetensors(path: Path, error=BundleError) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, or ``error`` naming the file when it is truncated or corrupt."""
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own SafetensorError (and OSError)
        if type(err).__name__ != "SafetensorError":
            raise
        raise error(f"{path}: corrupt or truncated safetensors file ({err})") from None


def _safetensors(bundle: Path, name: str) -> Path:
    """A weights file of the bundle; only safetensors are ever read (never pickles)."""
    path = bundle / name
    if not path.is_file():
        pickles = sorted(p.name for p in bundle.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
        extra = f" (found {pickles}; tunevl reads only safetensors from bundles)" if pickles else ""
        raise BundleError(f"{bundle}: missing {name}{extra}")
    return path


def _load_lora(view, bundle: Path) -> None:
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict

    saved = read_safetensors(_safetensors(bundle, "adapter_model.safetensors"))
    read_json_file(bundle / "adapter_config.json")  # peft's own reader would raise a bare JSONDecodeError
    try:
        view.model = PeftModel.from_pretrained(view.model, bundle, is_trainable=False)
    except ValueError as err:  # peft: "Target modules ... not found in the base model"
        raise BundleError(f"{bundle}: the LoRA adapter does not fit the base model: {err}") from err
    # peft skips unexpected keys with a warning; a renamed module would leave a silent no-op adapter.
    loaded = get_peft_model_state_dict(view.model, save_embedding_layers=False)  # as save_bundle wrote it
    unmatched = sorted(set(saved) - set(loaded))
    if not saved:
        raise BundleError(f"{bundle}: adapter_model.safetensors holds no LoRA tensors")
    if unmatched:
        raise BundleError(
            f"{bundle}: {len(unmatched)} of {len(saved)} saved LoRA tensors match no module of the base model, "
            f"e.g. {unmatched[0]!r}"
        )
    missing = sorted(set(loaded) - set(saved))
    if missing:
        raise BundleError(f"{bundle}: the adapter config targets {len(missing)} modules with no saved weights, e.g. {missing[0]!r}")


def _local_bundle(path: str | Path, revision: str | None) -> Path:
    p = Path(path)
    if p.is_dir():
        return p
    if p.exists() or str(path).startswith((".", "/")) or str(path).count("/") != 1:
        raise BundleError(f"{path}: no such bundle folder")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{path}: not a local folder"
    try:
        # Bundles from the Hub: safetensors and metadata only, never pickles.
        allow = ["*.json", "*.safetensors", "*.yaml", "*.md", "*.txt"]
        return Path(snapshot_download(str(path), revision=revision, allow_patterns=allow))
    except RepositoryNotFoundError as err:
        raise BundleError(f"{where}, and no model repo {path!r} on {constants.ENDPOINT} (or your token cannot read it)") from err
    except RevisionNotFoundError as err:
        raise BundleError(f"{path}: the Hub repo has no revision {revision!r}") from err
    except LocalEntryNotFoundError as err:
        raise BundleError(f"{where}, and it is not in the Hub cache while the Hub cannot be reached (offline?)") from err
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise BundleError(f"{where}, and the Hub answered HTTP {status} for {path!r}") from err
