"""Training-test fixtures: conversation data whose answers differ tenfold in length."""

from __future__ import annotations

import json

import pytest

SHORT, LONG = "Yes.", "There are three small red circles, two large blue squares and one green triangle on a plain white background."


@pytest.fixture(scope="session")
def mixed_answers(tmp_path_factory) -> str:
    """A JSONL of 4 image conversations, 2 with a one-word answer and 2 with a long one (one global batch)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("mixed_answers")
    lines = []
    for i, answer in enumerate([SHORT, LONG, SHORT, LONG]):
        Image.new("RGB", (32, 32), (40 * i, 255 - 40 * i, 90)).save(root / f"{i}.png")
        lines.append(json.dumps({
            "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]},
                         {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
            "images": [f"{i}.png"],
        }))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return str(root / "train.jsonl")


def next_token_overrides(model: str, data: str, out, per_device: int, accumulation: int) -> list[str]:
    """The shipped LLaVA recipe on its tiny twin for one optimizer step over the 4 records of ``data``
    (dropout off: the split changes the order in which dropout masks are drawn)."""
    return [f"model.name_or_path={model}", f"data.train.path={data}", "~data.eval", f"train.output_dir={out}",
            "train.max_steps=1", f"train.per_device_train_batch_size={per_device}",
            f"train.gradient_accumulation_steps={accumulation}", "train.save_steps=0", "train.progress_bar=false",
            "adapters.lora.lora_dropout=0.0", "train.seed=5"]
