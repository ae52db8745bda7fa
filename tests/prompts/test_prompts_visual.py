"""Visual prompt tuning: the hooked towers against a reference computation written out by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunevl.adapters.prompts import prompts_disabled
from tunevl.data.synthetic import SyntheticShapes


def _pixels(view):
    ds = SyntheticShapes(num_samples=3, split="eval")
    return view.preprocess_images([ds[i]["image"] for i in range(3)])


def _reference(view, pixels, prompts: torch.Tensor, deep: bool) -> torch.Tensor:
    """Unit image features with ``prompts`` ``[L, n, d]`` placed after the class token (CLIP) or first (SigLIP)."""
    base = view.base_model
    vm = base.vision_model
    k, n = view.vision_class_tokens, prompts.shape[1]
    with prompts_disabled(view):  # the towers' own modules, without the hooks' effect
        x = vm.embeddings(pixels)
        x = torch.cat([x[:, :k], prompts[0].expand(x.shape[0], -1, -1), x[:, k:]], dim=1)
        if view.family == "clip":
            x = vm.pre_layrnorm(x)
        for i, layer in enumerate(vm.encoder.layers):
            if deep and i > 0:
                x = torch.cat([x[:, :k], prompts[i].expand(x.shape[0], -1, -1), x[:, k + n:]], dim=1)
            x = layer(x, None)
        if view.family == "clip":
            return F.normalize(base.visual_projection(vm.post_layernorm(x[:, 0])), dim=-1)
        return F.normalize(vm.head(vm.post_layernorm(x)), dim=-1)


@pytest.mark.parametrize("deep", [False, True], ids=["shallow", "deep"])
@pytest.mark.parametrize("model", ["tiny-clip", "tiny-siglip"])
def test_visual_prompts_match_the_written_out_tower(model, deep, dual_view):
    torch.manual_seed(0)
    view = dual_view(model, visual_prompt={"num_tokens": 3, "deep": deep})
    prompts = view.visual_prompts
    layers = len(view.base_model.vision_model.encoder.layers)
    assert prompts.prompts.shape == ((layers if deep else 1), 3, 64) and prompts.prompts.requires_grad
    assert prompts.start == (1 if model == "tiny-clip" else 0)
    pixels = _pixels(view)
    with torch.no_grad():
        got = view.encode_images(pixels)
        torch.testing.assert_close(got, _reference(view, pixels, prompts.prompts.detach(), deep), rtol=0, atol=1e-6)
        with prompts_disabled(view):
            plain = view.encode_images(pixels)
    assert not torch.allclose(got, plain, atol=1e-3)


def test_vpt_init_is_uniform_in_the_papers_bound(dual_view):
    torch.manual_seed(0)
    view = dual_view("tiny-clip", visual_prompt={"num_tokens": 50})
    bound = (6.0 / (3 * 8 * 8 + 64)) ** 0.5  # patch 8, width 64
    values = view.visual_prompts.prompts.detach()
    assert values.abs().max() <= bound and values.abs().max() > 0.9 * bound


def test_visual_prompts_get_gradients_through_the_frozen_tower(dual_view):
    view = dual_view("tiny-clip", visual_prompt={"num_tokens": 2, "deep": True})
    view.encode_images(_pixels(view)).sum().backward()
    grads = view.visual_prompts.prompts.grad
    assert grads is not None and all(grads[i].abs().sum() > 0 for i in range(grads.shape[0]))
    assert all(p.grad is None for n, p in view.base_model.named_parameters() if "tunevl_" not in n)
