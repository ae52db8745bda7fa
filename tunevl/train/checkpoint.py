"""Resumable checkpoints: every piece of training state, written atomically.

``checkpoint-N/`` holds a loadable bundle (so any checkpoint can be evaluated or pushed)
and ``training_state/``: trainable tensors, optimizer, scheduler (or DeepSpeed's own
engine checkpoint), each rank's RNG states and ``trainer_state.json`` with the step.
Optimizer and RNG files are read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

STATE_DIR = "training_state"
_CKPT = re.compile(r"checkpoint-(\d+)$")


def capture_rng() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Completed checkpoints, oldest first (temporary folders of a killed save are ignored)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CKPT.search(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_resume(value: str, output_dir: str | Path) -> Path:
    """``latest`` -> newest checkpoint in ``output_dir``; otherwise the folder given."""
    from tunevl.errors import TrainingError

    if value == "latest":
        ckpts = list_checkpoints(output_dir)
        if not ckpts:
            raise TrainingError(f"train.resume_from_checkpoint=latest: no checkpoint-* folder in {output_dir}")
        return ckpts[-1]
    path = Path(value)
    if not (path / STATE_DIR / "trainer_state.json").is_file():
        raise TrainingError(f"train.resume_from_checkpoint: {path} is not a tunevl checkpoint (no {STATE_DIR}/trainer_state.json)")
    return path


def prune(output_dir: str | Path, keep: int | None) -> None:
    if keep is None or keep <= 0:
        return
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def save_torch_state(state_dir: Path, engine, trainable: dict[str, torch.Tensor]) -> None:
    """Rank-0 part of a plain-PyTorch checkpoint."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in trainable.items()}, state_dir / "trainable.safetensors")
    torch.save(engine.optimizer.state_dict(), state_dir / "optimizer.pt")
    torch.save(engine.scheduler.state_dict(), state_dir / "scheduler.pt")


def load_torch_state(state_dir: Path, engine) -> None:
    from tunevl.adapters.bundle import read_safetensors
    from tunevl.errors import TrainingError

    tensors = read_safetensors(state_dir / "trainable.safetensors", TrainingError)
    missing = [n for n, p in engine.module.named_parameters() if p.requires_grad and n not in tensors]
    if missing:
        raise TrainingError(f"{state_dir}: checkpoint lacks trainable tensors {missing[:3]}...; was the recipe changed?")
    params = dict(engine.module.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
    engine.optimizer.load_state_dict(load_torch_file(state_dir / "optimizer.pt"))
    engine.scheduler.load_state_dict(load_torch_file(state_dir / "scheduler.pt"))


def load_torch_file(path: Path):
    """``torch.load(weights_only=True)``; a truncated or corrupt file is a one-line error naming it."""
    import pickle

    from tunevl.errors import TrainingError

    try:
        return torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as err:
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        raise TrainingError(f"{path}: corrupt or truncated ({reason}); resume from an earlier checkpoint") from None


def write_trainer_state(state_dir: Path, state: dict) -> None:
    (state_dir / "trainer_state.json").write_text(json.dumps(state, indent=1) + "\n")


def read_trainer_state(ckpt: Path) -> dict:
    from tunevl.adapters.bundle import read_json_file
    from tunevl.errors import TrainingError

    state = read_json_file(ckpt / STATE_DIR / "trainer_state.json", TrainingError)
    if not isinstance(state, dict) or "step" not in state:
        raise TrainingError(f"{ckpt / STATE_DIR / 'trainer_state.json'}: not a tunevl trainer state (no 'step')")
    return state
