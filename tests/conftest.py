"""Shared fixtures: offline environment and tiny models saved to disk, loaded through ``from_pretrained``."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _tiny_cache(tmp_path_factory):
    """Built-in tiny models built on demand (tiny-siglip, tiny-llava...) go to a temporary cache, not ~/.cache."""
    os.environ["TUNEVL_CACHE"] = str(tmp_path_factory.mktemp("tunevl_cache"))
    yield


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory) -> str:
    """A freshly built (random) tiny CLIP saved with save_pretrained."""
    from tunevl.models.tiny import build_tiny_clip, save_tiny_clip

    path = tmp_path_factory.mktemp("models") / "tiny-clip-random"
    model, processor = build_tiny_clip(seed=0)
    save_tiny_clip(path, model, processor)
    return str(path)


def _quick_overrides(model_path: str, output_dir, steps: int = 4, **extra) -> list[str]:
    items = {
        "model.name_or_path": model_path,
        "train.output_dir": str(output_dir),
        "train.max_steps": steps,
        "train.progress_bar": "false",
        "train.per_device_train_batch_size": 8,
        "train.save_steps": 0,
        "data.train.num_samples": 512,
        "data.eval.num_samples": 32,
    }
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


@pytest.fixture
def quick():
    """``quick(model_path, output_dir, steps=4, **overrides)``: overrides shrinking the quickstart to a few fast steps."""
    return _quick_overrides
