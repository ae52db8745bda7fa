"""Soft prompts for generative LVLMs: n learnable input embeddings at a chosen place of the prompt
(Lester et al. 2021, https://arxiv.org/abs/2104.08691; CoOp for vision-language, https://arxiv.org/abs/2109.01134).

The prompt's token slots are real sequence positions (placeholder ids whose embeddings are swapped
for the learned vectors), so the attention mask and position ids, Qwen2-VL's multimodal RoPE
included, extend with them. Initialised from the embeddings of ``init_text``, the soft prompt
reproduces the logits of that text written at the same place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunevl.models.lvlm import SOFT_PROMPT_POSITIONS, SoftPrompt
from tunevl.models.partitioned import gathered

__all__ = ["SOFT_PROMPT_POSITIONS", "SoftPrompt", "SoftPromptConfig", "apply_soft_prompt"]


@dataclass
class SoftPromptConfig:
    """The ``adapters.soft_prompt`` recipe node.

    Args:
        num_tokens: Number of learned embeddings. With ``init_text``, None takes its token count;
            a different number truncates it or repeats it cyclically.
        init_text: Initialise from the embeddings of this text's tokens (random when omitted).
        position: ``after_image`` (after the first image, before the instruction), ``before_response``
            (at the end of the first prompt) or ``start`` (start of the sequence, after bos).
    """

    num_tokens: int | None = None
    init_text: str | None = None
    position: str = "after_image"

    def __post_init__(self):
        if self.position not in SOFT_PROMPT_POSITIONS:
            raise ValueError(f"position must be one of {', '.join(SOFT_PROMPT_POSITIONS)}, got {self.position!r}")
        if self.num_tokens is None and self.init_text is None:
            raise ValueError("give num_tokens, init_text or both")
        if self.num_tokens is not None and self.num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {self.num_tokens}")


def apply_soft_prompt(view, config: dict | SoftPromptConfig) -> SoftPrompt:
    """Create a trainable soft prompt on ``view`` (before or after LoRA), initialised from ``init_text``."""
    cfg = config if isinstance(config, SoftPromptConfig) else SoftPromptConfig(**config)
    embed = view.inner_model.get_input_embeddings()
    if cfg.init_text is not None:
        ids = view.tokenizer(cfg.init_text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError("adapters.soft_prompt.init_text has no tokens")
        n = cfg.num_tokens or len(ids)
        ids = [ids[i % len(ids)] for i in range(n)]
        with torch.no_grad(), gathered(embed.weight):  # ZeRO-3 loads the embedding partitioned
            init = embed(torch.tensor(ids, device=embed.weight.device)).float()
    else:
        g = torch.Generator().manual_seed(0)
        with gathered(embed.weight):
            std, hidden = float(embed.weight.float().std()), embed.weight.shape[1]
        init = torch.randn(cfg.num_tokens, hidden, generator=g) * std
    prompt = SoftPrompt(init.shape[0], init.shape[1], cfg.position)
    with torch.no_grad():
        prompt.weight.copy_(init)
    view.attach_soft_prompt(prompt)
    prompt.weight.requires_grad_(True)
    return prompt
