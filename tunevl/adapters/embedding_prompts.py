"""Embedding prompts: the ``adapters.embedding_prompts`` recipe node, which makes a generative LVLM an image-text
embedder (VladVA, https://arxiv.org/abs/2412.04378; see :mod:`tunevl.models.embedder` for the two towers).

With ``soft: true`` (the paper's setting) the image and the text prompt each become a soft prompt of their
own: learned embeddings that take the places of the prompt's tokens, after the image or caption, and start
as those tokens' embeddings, so an untrained soft prompt embeds exactly as the handcrafted prompt does.
They are named soft prompts of the view (``soft_prompt.image`` / ``soft_prompt.text`` in the bundle).
With ``soft: false`` the handcrafted prompts stay as they are (LoRA alone trains).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from tunevl.errors import BundleError
from tunevl.models.embedder import IMAGE, TEXT, prompt_token_ids
from tunevl.models.lvlm import SoftPrompt
from tunevl.models.partitioned import gathered

__all__ = ["EmbeddingPromptsConfig", "apply_embedding_prompts"]

#: E5-V's prompts (kongds/E5-V README), which VladVA starts from.
IMAGE_PROMPT = "Summary above image in one word:"
TEXT_PROMPT = "Summary above sentence in one word:"


@dataclass
class EmbeddingPromptsConfig:
    """The ``adapters.embedding_prompts`` recipe node: the prompts whose last token's hidden state is the embedding.

    Args:
        image_prompt: Written after the image(s) in the user turn of the family's chat template.
        text_prompt: Written after the caption and a newline, likewise.
        soft: Learn a soft prompt for each, initialised from the prompt's own token embeddings and put in their
            places (VladVA); false keeps the handcrafted prompts fixed.
        num_tokens: Soft-prompt length; None takes each prompt's token count, another number truncates the
            prompt's embeddings or repeats them cyclically as the initialisation.
    """

    image_prompt: str = IMAGE_PROMPT
    text_prompt: str = TEXT_PROMPT
    soft: bool = True
    num_tokens: int | None = None

    def __post_init__(self):
        if not self.image_prompt.strip() or not self.text_prompt.strip():
            raise ValueError("image_prompt and text_prompt must not be empty")
        if self.num_tokens is not None and self.num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {self.num_tokens}")

    def to_dict(self) -> dict:
        return asdict(self)


def apply_embedding_prompts(view, config: dict | EmbeddingPromptsConfig, *, from_bundle: bool = False) -> EmbeddingPromptsConfig:
    """Make ``view`` an embedder: set ``view.embedding_prompts`` and, with ``soft``, create the two trainable soft
    prompts from the prompts' embeddings (after LoRA or before; the input embeddings are frozen either way).

    Args:
        view: A generative LVLM view.
        config: The recipe node or its dataclass.
        from_bundle: The soft prompts were loaded from a bundle (``load_extras``): check they are there
            instead of creating them.

    Raises:
        ValueError: ``view`` is not a generative LVLM view.
        BundleError: ``from_bundle`` and a soft prompt is missing.
    """
    cfg = config if isinstance(config, EmbeddingPromptsConfig) else EmbeddingPromptsConfig(**config)
    if not hasattr(view, "soft_prompts"):
        raise ValueError(f"adapters.embedding_prompts needs a generative LVLM, not the {view.family} family")
    view.embedding_prompts = cfg
    if not cfg.soft:
        return cfg
    embed = view.inner_model.get_input_embeddings()
    for name in (IMAGE, TEXT):
        if name in view.soft_prompts:
            continue
        if from_bundle:
            raise BundleError(f"the bundle's embedding prompts are soft, but it holds no soft_prompt.{name}")
        ids = prompt_token_ids(view, name)
        n = cfg.num_tokens or len(ids)
        ids = [ids[i % len(ids)] for i in range(n)]
        with torch.no_grad(), gathered(embed.weight):  # ZeRO-3 loads the embedding partitioned
            init = embed(torch.tensor(ids, device=embed.weight.device)).float()
        prompt = SoftPrompt(n, init.shape[1], "named")
        with torch.no_grad():
            prompt.weight.copy_(init)
        view.attach_soft_prompt(prompt, name=name)
        prompt.weight.requires_grad_(True)
    return cfg
