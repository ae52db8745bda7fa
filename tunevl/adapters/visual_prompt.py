"""Visual prompt tuning for the image tower of a dual encoder (VPT, Jia et al. 2022, https://arxiv.org/abs/2203.12119).

``num_tokens`` learned tokens join the vision transformer's sequence right after the class token
(CLIP), or at its start (SigLIP, whose tower has no class token and pools all positions with its
attention head), after the position embeddings and before CLIP's pre-layernorm. **Shallow** prompts
enter once, at the input; **deep** prompts are replaced before every layer by that layer's own learned
tokens. Everything is done by hooks on the HF modules (the embeddings and the encoder layers): the
model is not subclassed, and the class-token pooling of CLIP is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class VisualPromptConfig:
    """The ``adapters.visual_prompt`` recipe node.

    Args:
        num_tokens: Learned tokens per layer.
        deep: One set of tokens per layer (VPT-deep) instead of one at the input (VPT-shallow).
    """

    num_tokens: int = 8
    deep: bool = False

    def __post_init__(self):
        if self.num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {self.num_tokens}")


class VisualPrompts(nn.Module):
    """``prompts`` ``[L, n, d]``: L = 1 (shallow) or the number of layers (deep); ``start`` is where they
    go in the sequence (after the class token). Calling the module returns layer ``layer``'s tokens."""

    def __init__(self, num_tokens: int, dim: int, depth: int, start: int):
        super().__init__()
        self.num_tokens, self.dim, self.depth, self.start = num_tokens, dim, depth, start
        self.prompts = nn.Parameter(torch.zeros(depth, num_tokens, dim))
        self.enabled = True

    def forward(self, layer: int = 0) -> torch.Tensor:
        return self.prompts[layer].clone()  # a copy: it outlives ZeRO-3 releasing the gathered parameter

    def _insert(self, module, args, output: torch.Tensor) -> torch.Tensor:
        """After the vision embeddings: ``[B, S, d] -> [B, S + n, d]``."""
        if not self.enabled:
            return output
        tokens = self(0).to(output.dtype).unsqueeze(0).expand(output.shape[0], -1, -1)
        k = self.start
        return torch.cat([output[:, :k], tokens, output[:, k:]], dim=1)

    def _replace(self, layer: int):
        """Before encoder layer ``layer`` (deep prompts): its input's prompt tokens become the layer's own."""

        def hook(module, args, kwargs):
            if not self.enabled:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            k, n = self.start, self.num_tokens
            tokens = self(layer).to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
            hidden = torch.cat([hidden[:, :k], tokens, hidden[:, k + n:]], dim=1)
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        return hook


def _vision_layers(view) -> nn.ModuleList:
    return view.base_model.vision_model.encoder.layers


def attach_visual_prompts(view, prompts: VisualPrompts) -> VisualPrompts:
    """Own ``prompts`` inside the vision tower and hook its embeddings (and layers, when deep)."""
    if getattr(view, "visual_prompts", None) is not None:
        raise ValueError("the model already has visual prompts")
    vision = view.base_model.vision_model
    prompts.to(device=next(vision.parameters()).device)
    vision.tunevl_visual_prompts = prompts  # merge removes tunevl_* modules: they are not base weights
    vision.embeddings.register_forward_hook(prompts._insert)
    if prompts.depth > 1:
        for i, layer in enumerate(_vision_layers(view)):
            if i > 0:
                layer.register_forward_pre_hook(prompts._replace(i), with_kwargs=True)
    view.visual_prompts = prompts
    return prompts


def apply_visual_prompts(view, config: VisualPromptConfig) -> VisualPrompts:
    """Create trainable visual prompts, initialised as VPT does: uniform in ``+-sqrt(6 / (3 p^2 + d))``."""
    vision_config = view.base_model.config.vision_config
    dim, patch = vision_config.hidden_size, vision_config.patch_size
    depth = len(_vision_layers(view)) if config.deep else 1
    prompts = VisualPrompts(config.num_tokens, dim, depth, view.vision_class_tokens)
    bound = math.sqrt(6.0 / (3 * patch * patch + dim))
    with torch.no_grad():
        prompts.prompts.uniform_(-bound, bound)
    attach_visual_prompts(view, prompts)
    prompts.requires_grad_(True)
    return prompts


def visual_prompt_metadata(prompts: VisualPrompts) -> dict:
    return {"num_tokens": prompts.num_tokens, "dim": prompts.dim, "depth": prompts.depth, "start": prompts.start}


def restore_visual_prompts(view, meta: dict) -> VisualPrompts:
    prompts = VisualPrompts(meta["num_tokens"], meta["dim"], meta["depth"], meta["start"])
    attach_visual_prompts(view, prompts)
    prompts.requires_grad_(False)
    return prompts
