"""The merged checkpoint's card snippet runs as printed on tunevl's own install (no torchvision) and generates."""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch
from PIL import Image

from tunevl.adapters.merge import merge


@pytest.mark.parametrize("name", ["llava:lora+projector", "qwen2_vl:soft_prompt+lora"])
def test_merged_card_snippet_loads_and_generates(bundle_of, name, tmp_path):
    out = merge(bundle_of(name), tmp_path / "merged")
    card = (out / "README.md").read_text()
    block = re.findall(r"```python\n(.*?)```", card, re.S)[0].replace("path/to/this/folder", str(out))
    namespace: dict = {}
    exec(block, namespace)  # noqa: S102 - the card's own snippet, as a user pastes it
    model, processor = namespace["model"].eval(), namespace["processor"]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many circles?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[Image.new("RGB", (32, 32), (200, 30, 30))], text=[text], return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3
    if importlib.util.find_spec("torchvision") is None and name.startswith("qwen2_vl"):
        assert "ImageOnlyProcessor" in block  # AutoProcessor would need torchvision here
