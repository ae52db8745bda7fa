"""A frozen vision tower runs without autograd state; image-token budgets and pre-flight length checks."""

from __future__ import annotations

import pytest
import torch

from tunevl.adapters.lora import apply_lora
from tunevl.data.synthetic import render_shapes
from tunevl.errors import DataError
from tunevl.models import ModelConfig, load_view

NAMES = ["tiny-llava", "tiny-qwen2-vl"]


def _record(size=32, question="How many circles?"):
    return {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                         {"role": "assistant", "content": "three"}],
            "images": [render_shapes(3, "red", "circle", image_size=size, seed=0)]}


def _saved_in_vision(view, batch) -> int:
    """Tensors autograd saves for backward while a vision-trunk module runs, in one training forward."""
    inside, count = [0], [0]
    handles = []
    for m in view.vision_trunk():
        handles.append(m.register_forward_pre_hook(lambda *a: inside.__setitem__(0, inside[0] + 1)))
        handles.append(m.register_forward_hook(lambda *a: inside.__setitem__(0, inside[0] - 1)))

    def pack(t):
        count[0] += inside[0] > 0
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hidden = view.last_hidden_state(batch)
    hidden.float().pow(2).mean().backward()
    for h in handles:
        h.remove()
    return count[0]


@pytest.mark.parametrize("name", NAMES)
def test_frozen_vision_tower_saves_no_activations(name):
    view = load_view(ModelConfig(name_or_path=name))
    apply_lora(view, {"r": 2, "target_modules": ["language-attention", "projector"]})
    # HF's checkpointing path for adapters also makes the vision tower's input embeddings require grad.
    view.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    view.base_model.enable_input_require_grads()
    view.model.train()
    batch = view.collate([_record(), _record()], {"messages"})
    assert _saved_in_vision(view, batch) == 0
    outputs = []
    hook = view.vision_trunk()[-1].register_forward_hook(lambda m, a, out: outputs.append(out))
    view.last_hidden_state(batch).sum().backward()
    hook.remove()
    flat = outputs[0] if torch.is_tensor(outputs[0]) else outputs[0][0]
    assert flat.grad_fn is None
    assert all(p.grad is None for n, p in view.model.named_parameters() if "vision" in n or "visual.blocks" in n)
    assert any(p.grad is not None for p in view.projector().parameters())  # the projector in full still trains

    # Control: with LoRA in the tower, the tower needs its graph and keeps it.
    trained_tower = load_view(ModelConfig(name_or_path=name))
    apply_lora(trained_tower, {"r": 2, "target_modules": ["vision-attention"]})
    trained_tower.model.train()
    assert _saved_in_vision(trained_tower, batch) > 10


def test_max_pixels_sets_the_qwen_image_token_budget():
    small = load_view(ModelConfig(name_or_path="tiny-qwen2-vl"))
    big = load_view(ModelConfig(name_or_path="tiny-qwen2-vl", processor_kwargs={"max_pixels": 64 * 64}))
    image = _record(size=64)["images"][0]
    assert small.num_image_tokens(image) == 4 and big.num_image_tokens(image) == 16
    batch = big.collate([_record(size=64)], {"messages"})
    assert int((batch["input_ids"] == big.image_token_id).sum()) == 16 == int(batch["image_grid_thw"].prod() // 4)
    with pytest.raises(ValueError, match="no such setting"):
        load_view(ModelConfig(name_or_path="tiny-llava", processor_kwargs={"max_pixelz": 1}))


@pytest.mark.parametrize("name", NAMES)
def test_preflight_catches_truncation_into_image_tokens(name):
    records = [_record(), {**_record(), "messages": [{"role": "user", "content": "Say three."}, {"role": "assistant", "content": "three"}], "images": []}]
    view = load_view(ModelConfig(name_or_path=name))
    stats = view.check_lengths(records)
    longest = stats["longest"]
    assert view.check_lengths(records, max_length=longest)["records"] == 2
    n_img = view.num_image_tokens(records[0]["images"][0])
    with pytest.raises(DataError, match=r"record 0: .*image tokens end at position .*max_length=3\b.*max_pixels"):
        view.check_lengths(records, max_length=3)
    # Room for the image but not for the answer: also caught before training.
    labels = view.encode(records[0]["messages"], records[0]["images"])["labels"]
    first_answer = next(i for i, lab in enumerate(labels) if lab != -100)
    assert n_img < first_answer
    with pytest.raises(DataError, match="leaves no answer token"):
        view.check_lengths(records, max_length=first_answer)


def test_max_length_in_the_recipe_truncates_batches():
    view = load_view(ModelConfig(name_or_path="tiny-llava", max_length=24))
    batch = view.collate([_record(), _record()], {"messages"})
    assert batch["input_ids"].shape[1] == 24


def test_preflight_reads_image_headers_only(tmp_path, monkeypatch):
    """Image-token counts come from file headers: pre-flight over a large set never decodes pixels."""
    from tunevl.data.images import ImageRef

    view = load_view(ModelConfig(name_or_path="tiny-qwen2-vl", processor_kwargs={"max_pixels": 65536}))
    small, large = _record(32), _record(128)  # 4 and 64 image tokens under this budget
    paths = [tmp_path / "small.png", tmp_path / "large.png"]
    for record, path in zip((small, large), paths):
        record["images"][0].save(path)
    on_disk = [{**r, "images": [ImageRef(path=str(p))]} for r, p in zip((small, large), paths)]
    want = view.check_lengths([small, large])

    def no_decode(self):
        raise AssertionError("pre-flight decoded an image")

    monkeypatch.setattr(ImageRef, "open", no_decode)
    assert view.check_lengths(on_disk) == want and want["longest"] > 64
    with pytest.raises(DataError, match="record 1: .* 64 image tokens end at position"):
        view.check_lengths(on_disk, max_length=40)  # record 0 (4 image tokens) fits; record 1 does not
