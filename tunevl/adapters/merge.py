"""Fold a bundle into its base model: a checkpoint that loads with plain ``transformers``.

LoRA is merged into the weights (``merge_and_unload``; peft ``modules_to_save`` copies such as an
LVLM projector replace the originals), and extras that are parameters of the base model (CLIP's
logit scale, SigLIP's scale and bias) are already in place once the bundle is loaded. Parameters
that tunevl reshaped for training (the 0-dim logit scale becomes ``[1]`` for DeepSpeed) get their
original shapes back. Extras that are not weights of the base model (soft prompts, CoOp/CoCoOp
contexts and meta-nets, visual prompts) cannot be merged; they are kept in a side file, and the card says so.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tunevl.adapters.bundle import EXTRAS_FILE, RECIPE_FILE, _local_bundle, load_bundle, read_meta
from tunevl.adapters.card import make_merged_card
from tunevl.models.registry import DTYPE_NAMES, resolve_dtype

log = logging.getLogger("tunevl")



def split_extras(model: nn.Module, names: list[str]) -> tuple[list[str], list[str]]:
    """``(merged, unmerged)``: extras that are parameters of ``model`` vs. those that are not."""
    params = dict(model.named_parameters())
    merged = [n for n in names if n in params]
    return merged, [n for n in names if n not in params]


def detach_tunevl_modules(model: nn.Module) -> list[str]:
    """Remove the modules tunevl attached inside ``model`` (named ``tunevl_*``, e.g. the soft prompt);
    returns their qualified names. They are not weights of the base architecture, so a merged
    checkpoint must not carry them (plain transformers would report them as unexpected keys)."""
    removed: list[str] = []
    for name, _ in list(model.named_modules()):
        if name.rpartition(".")[2].startswith("tunevl_") and not any(name.startswith(r + ".") for r in removed):
            parent, _, attr = name.rpartition(".")
            delattr(model.get_submodule(parent) if parent else model, attr)
            removed.append(name)
    return removed


def save_processor(processor, out: Path) -> None:
    """Save ``processor`` so that plain ``AutoProcessor`` rebuilds the family's own transformers class.

    tunevl may hold a subclass (Qwen2-VL's image-only processor, which leaves out the video
    processor that needs torchvision). The saved config then names the transformers class it
    derives from, and a video processor the subclass left out is described by the image
    processor's settings, from which transformers infers it (as for Qwen2-VL checkpoints saved
    before video processors existed).
    """
    processor.save_pretrained(out)
    plain = next(c for c in type(processor).__mro__ if c.__module__.startswith("transformers."))
    path = out / "processor_config.json"
    if plain is type(processor) or not path.is_file():
        return
    config = json.loads(path.read_text())
    config["processor_class"] = plain.__name__
    wanted = plain.get_attributes() if hasattr(plain, "get_attributes") else []
    if "video_processor" in wanted and "video_processor" not in config and "image_processor" in config:
        config["video_processor"] = dict(config["image_processor"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def restore_shapes(model: nn.Module) -> list[str]:
    """Give parameters the shapes a freshly built model of the same config has; returns the names changed.

    Only reshapes (same number of elements) are undone; the reference model is built on the
    meta device, so this costs no memory.
    """
    with torch.device("meta"):
        reference = type(model)(model.config)
    shapes = {n: p.shape for n, p in reference.named_parameters()}
    changed = []
    for name, param in list(model.named_parameters()):
        want = shapes.get(name)
        if want is not None and param.shape != want and param.numel() == want.numel():
            owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(owner, name.rpartition(".")[2], nn.Parameter(param.detach().reshape(want), requires_grad=False))
            changed.append(name)
    return changed


def _target_dtype(dtype: str, base: str, revision: str | None) -> torch.dtype:
    if dtype != "auto":
        return resolve_dtype(dtype)
    from transformers.utils import cached_file

    from tunevl.models.tiny import resolve_builtin

    # The base checkpoint's own dtype (the bundle was loaded in float32 to merge exactly).
    config = json.loads(Path(cached_file(resolve_builtin(base), "config.json", revision=revision)).read_text())
    saved = config.get("dtype") or config.get("torch_dtype")
    return resolve_dtype(saved) if saved in DTYPE_NAMES else torch.float32


def check_merge_target(bundle: str | Path, out_dir: str | Path, overwrite: bool) -> Path:
    """The merge output folder, after refusing the bundle itself (or a folder holding it), a file, and a
    non-empty folder without ``overwrite``."""
    from tunevl.errors import BundleError

    out = Path(out_dir).expanduser()
    source = Path(bundle).expanduser()
    if source.is_dir():
        a, b = out.resolve(), source.resolve()
        if a == b or a in b.parents:
            raise BundleError(f"{out_dir}: this is the bundle {'itself' if a == b else 'folder'}; merging would "
                              "overwrite it. Give another output folder")
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out_dir}: a file, not a folder; give another output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise BundleError(f"{out_dir}: the folder is not empty; give a new folder, or --overwrite to replace it")
    return out


def merge(
    bundle: str | Path,
    out_dir: str | Path,
    *,
    revision: str | None = None,
    base_model: str | None = None,
    base_revision: str | None = None,
    trust_remote_code: bool = False,
    dtype: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Write ``bundle`` merged into its base model to ``out_dir`` (safetensors, processor, card).

    ``out_dir`` must be new or empty (``overwrite`` replaces a non-empty one, once the merged
    checkpoint is complete) and can never be, or hold, the bundle itself.

    Args:
        bundle: A bundle folder or Hub repo id.
        out_dir: The folder to write; ``transformers`` ``from_pretrained`` loads it.
        revision: Hub revision of the bundle.
        base_model: A copy of the base model to merge into (see :func:`tunevl.load`).
        base_revision: Revision of ``base_model``.
        trust_remote_code: Allow code shipped with the base checkpoint to run.
        dtype: ``auto`` (the base checkpoint's dtype), ``float32``, ``bfloat16`` or ``float16``.
        overwrite: Replace a non-empty ``out_dir``.
    """
    out = check_merge_target(bundle, out_dir, overwrite).resolve()
    source = _local_bundle(bundle, revision)
    meta = read_meta(source)
    view = load_bundle(
        source, trust_remote_code=trust_remote_code, base_model=base_model, base_revision=base_revision,
        torch_dtype=torch.float32,  # never round the base before adding the deltas; cast on saving
        quantize=False,  # a QLoRA bundle merges into the unquantised base
    )
    model = view.model.float()
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.requires_grad_(False)
    cap = getattr(view, "max_logit_scale", None)
    if cap is not None:  # tunevl clamps CLIP's scale in its forward; plain transformers does not (SigLIP: no clamp)
        with torch.no_grad():
            model.logit_scale.clamp_(max=cap)
    detach_tunevl_modules(model)
    reshaped = restore_shapes(model)
    _, unmerged = split_extras(model, meta.get("extras", []))
    base = view.config
    model.to(_target_dtype(dtype, base.name_or_path, base.revision))

    staging = out.with_name(out.name + ".tmp")  # written whole, then renamed: a failure leaves `out` as it was
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    if getattr(view, "processor", None) is not None:
        save_processor(view.processor, staging)
    side_file = None
    if unmerged:
        side_file = EXTRAS_FILE
        tensors = load_file(source / EXTRAS_FILE)
        save_file({k: tensors[k].contiguous() for k in unmerged}, staging / side_file, metadata={"format": "pt"})
        record = {"bundle": str(bundle), "tensors": unmerged}
        if meta.get("prompts"):  # what tunevl needs to rebuild the prompts these tensors belong to
            record["prompts"] = meta["prompts"]
        (staging / "tunevl_unmerged.json").write_text(json.dumps(record, indent=2) + "\n")
    recipe = (source / RECIPE_FILE).read_text() if (source / RECIPE_FILE).is_file() else None
    (staging / "README.md").write_text(make_merged_card(meta, recipe, str(bundle), side_file, unmerged))
    if meta["base_model"].get("quantization"):
        log.info("%s was trained with QLoRA on a quantised base; its LoRA is merged into the unquantised base weights "
                 "(%s), not into the quantised ones", bundle, str(next(model.parameters()).dtype).replace("torch.", ""))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    log.info("merged %s into %s%s", bundle, out, f" (restored shapes of {', '.join(reshaped)})" if reshaped else "")
    return out
