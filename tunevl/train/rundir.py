"""The run folder (``train.output_dir``): nothing of another run is lost, nothing is left half-written.

- :func:`prepare_output_dir` refuses a folder that holds another run's bundle or checkpoints
  (unless ``train.overwrite_output_dir`` or a resume), a file in its place, or one that cannot
  be written, before anything is loaded.
- :func:`publish` writes bundle files like checkpoints: into a temporary folder, moved into
  place when complete, so a full disk or a crash leaves the previous bundle whole.
- :func:`check_resume` refuses to resume a checkpoint under a recipe that would train something
  else (other trainable shapes, objectives, data, total steps), naming what changed; changes of
  the optimizer's settings only warn.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from tunevl.errors import TrainingError
from tunevl.train import checkpoint as ckpt

log = logging.getLogger("tunevl")

#: Files of a finished run's bundle (any of them marks the folder as another run's).
BUNDLE_FILES = ("adapter_config.json", "adapter_model.safetensors", "tunevl_extras.safetensors", "tunevl.json",
                "recipe.yaml", "README.md", "metrics.json", "loss_curve.png")
#: The temporary folder a bundle is written into before it is moved into place.
STAGING = ".bundle.tmp"


def prepare_output_dir(cfg) -> Path:
    """Check ``train.output_dir`` before the run loads anything; returns it.

    Every rank calls it before the process group starts (so none can have written yet).

    Raises:
        TrainingError: a file where the folder should be, a folder that cannot be written, or
            another run's bundle or checkpoints without ``overwrite_output_dir`` or a resume.
    """
    out = Path(cfg.output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise TrainingError(f"train.output_dir: {out} is a file, not a folder; choose another train.output_dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        reason = (err.strerror or str(err)).lower()
        raise TrainingError(f"train.output_dir: cannot write to {out} ({reason}); choose another train.output_dir") from None
    found = [name for name in BUNDLE_FILES if (out / name).is_file()]
    checkpoints = ckpt.list_checkpoints(out)
    if not (found or checkpoints) or cfg.resume_from_checkpoint:
        return out
    what = ", ".join([*(p.name for p in checkpoints[-3:]), *found[:3]])
    if not cfg.overwrite_output_dir:
        resume = "to continue it set train.resume_from_checkpoint=latest, " if checkpoints else ""
        raise TrainingError(
            f"train.output_dir: {out} holds another run ({what}); {resume}to replace it set "
            "train.overwrite_output_dir=true, or choose another train.output_dir"
        )
    if checkpoints and os.environ.get("RANK", "0") == "0":
        log.warning("train.overwrite_output_dir: removing %d checkpoint(s) of the previous run in %s", len(checkpoints), out)
    for path in checkpoints:  # their numbers would mix with this run's (pruning, resume=latest)
        shutil.rmtree(path, ignore_errors=True)
    return out


def publish(out: Path, write: Callable[[Path], Any], *, replace_bundle: bool = False) -> None:
    """Write files with ``write(folder)`` into a temporary folder inside ``out``, then move each into ``out``.

    A failure while writing (a full disk, an error) leaves ``out`` as it was; the moves are renames
    within one file system. With ``replace_bundle``, bundle files of an earlier bundle that the new
    one does not have are removed (a LoRA file next to a soft-prompt-only bundle would be read as
    its adapter).
    """
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    written = {p.name for p in staging.iterdir()}
    if replace_bundle:
        for name in BUNDLE_FILES:
            if name not in written and (out / name).is_file():
                (out / name).unlink()
    for name in sorted(written):
        target = out / name
        if target.is_dir() and not (staging / name).is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    staging.rmdir()


# ---------------------------------------------------------------------------- resume

#: Recipe keys a resumed run must share with its checkpoint: they decide what is trained, on what, for how long.
MUST_MATCH = (("model",), ("adapters",), ("objectives",), ("data", "train"), ("train", "per_device_train_batch_size"),
              ("train", "gradient_accumulation_steps"), ("train", "seed"), ("train", "max_steps"),
              ("train", "num_train_epochs"), ("train", "deepspeed"))
#: Keys whose change only warns: the resumed optimizer and scheduler states carry the checkpoint's values.
WARN_ONLY = ("learning_rate", "lr_scheduler_type", "warmup_ratio", "warmup_steps", "weight_decay", "adam_beta1",
             "adam_beta2", "adam_epsilon", "max_grad_norm", "bf16")


def run_signature(module, total_steps: int, num_records: int) -> dict:
    """What a checkpoint records about its run, for :func:`check_resume`: trainable shapes (before any
    ZeRO-3 partitioning), total steps and the number of training records."""
    shapes = {n: list(getattr(p, "ds_shape", p.shape)) for n, p in module.named_parameters() if p.requires_grad}
    return {"trainable_shapes": shapes, "total_steps": total_steps, "num_train_records": num_records}


def _flatten(node: Any, path: tuple) -> dict[str, Any]:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flatten(v, path + (k,)))
        return out or {".".join(map(str, path)): {}}
    if isinstance(node, list):
        out = {}
        for i, v in enumerate(node):
            out.update(_flatten(v, path + (i,)))
        return out or {".".join(map(str, path)): []}
    return {".".join(map(str, path)): node}


def _train_defaults() -> dict:
    import dataclasses

    from tunevl.train.config import TrainConfig

    return {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def _resolved(tree: dict) -> dict:
    """The recipe tree with ``train`` defaults filled in, as plain data."""
    from tunevl.config.yaml12 import dump_yaml, loads_yaml

    plain, _ = loads_yaml(dump_yaml(tree))
    plain["train"] = {**_train_defaults(), **(plain.get("train") or {})}
    return plain


def _node(tree: dict, key: tuple) -> Any:
    for k in key:
        tree = tree.get(k) if isinstance(tree, dict) else None
    return tree


def recipe_changes(old_tree: dict, new_tree: dict) -> tuple[list[str], list[str]]:
    """``(changes that make another run, changes that only warn)`` between two recipes, as
    ``key: old -> new`` strings."""
    old, new = _resolved(old_tree), _resolved(new_tree)
    errors = []
    for key in MUST_MATCH:
        a, b = _flatten(_node(old, key), key), _flatten(_node(new, key), key)
        for name in sorted(set(a) | set(b), key=str):
            if a.get(name, "<absent>") != b.get(name, "<absent>"):
                errors.append(f"{name}: {a.get(name, '<absent>')!r} -> {b.get(name, '<absent>')!r}")
    warnings = [f"train.{k}: {old['train'].get(k)!r} -> {new['train'].get(k)!r}" for k in WARN_ONLY
                if old["train"].get(k) != new["train"].get(k)]
    return errors, warnings


def _shape_changes(old: dict, new: dict) -> list[str]:
    changes = [f"trainable {n}: {old.get(n, '<absent>')} -> {new.get(n, '<absent>')}"
               for n in sorted(set(old) | set(new)) if old.get(n) != new.get(n)]
    if len(changes) > 2:
        changes = [*changes[:2], f"({len(changes) - 2} more trainable tensors differ)"]
    return changes


def check_resume(cfg, recipe, signature: dict, world_size: int) -> Path | None:
    """Check that ``train.resume_from_checkpoint`` continues this recipe's run; returns the checkpoint.

    Raises:
        TrainingError: the checkpoint was written by a recipe that trains other tensors, objectives,
            data or number of steps (or by another number of processes), naming what changed.
    """
    if not cfg.resume_from_checkpoint:
        return None
    path = ckpt.resolve_resume(cfg.resume_from_checkpoint, Path(cfg.output_dir))
    state = ckpt.read_trainer_state(path)
    changes: list[str] = []
    warnings: list[str] = []
    recipe_file = path / "recipe.yaml"
    if recipe_file.is_file():
        from tunevl.config.yaml12 import loads_yaml

        old_tree, _ = loads_yaml(recipe_file.read_text(encoding="utf-8"), file=str(recipe_file))
        changes, warnings = recipe_changes(old_tree, recipe.tree)
    recorded = state.get("run") or {}
    if recorded.get("trainable_shapes") is not None:
        changes += _shape_changes(recorded["trainable_shapes"], signature["trainable_shapes"])
    for key, label in (("total_steps", "total steps"), ("num_train_records", "training records")):
        if recorded.get(key) is not None and recorded[key] != signature[key]:
            changes.append(f"{label}: {recorded[key]} -> {signature[key]}")
    if state.get("world_size", world_size) != world_size:
        changes.append(f"processes: {state['world_size']} -> {world_size}")
    state_dir = path / ckpt.STATE_DIR
    written_by = "deepspeed" if (state_dir / "deepspeed").is_dir() else "torch"
    if written_by != ("deepspeed" if cfg.deepspeed else "torch") and not any(c.startswith("train.deepspeed") for c in changes):
        changes.append(f"engine: the checkpoint was written {'with' if written_by == 'deepspeed' else 'without'} DeepSpeed")
    if changes:
        shown = "; ".join(changes[:6]) + (f"; ({len(changes) - 6} more)" if len(changes) > 6 else "")
        raise TrainingError(
            f"train.resume_from_checkpoint: {path} was trained by a different recipe: {shown}. Resume with the "
            f"recipe it was trained with ({recipe_file}), or start a new run (another train.output_dir, or "
            "train.overwrite_output_dir=true)"
        )
    if warnings and os.environ.get("RANK", "0") == "0":
        log.warning("resuming %s with changed optimizer settings (%s); the resumed optimizer and scheduler "
                    "continue with the checkpoint's learning-rate schedule", path, "; ".join(warnings))
    return path
