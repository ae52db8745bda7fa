"""Generation with a generative-LVLM bundle: ``tunevl.load(bundle).generate(images, prompt)``."""

from __future__ import annotations

from typing import Sequence

import torch


class Generator:
    """Text generation from images and a prompt, with the bundle's LoRA and soft prompt applied.

    Args:
        view: The LVLM family view with adapters loaded.
    """

    def __init__(self, view):
        self.view = view

    @property
    def model(self):
        """The underlying (peft-wrapped) transformers model."""
        return self.view.model

    def to(self, device) -> "Generator":
        self.view.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.view.device

    def prompt_batch(self, images: Sequence, prompt: str, system_prompt: str | None = None) -> dict:
        """The tokenised generation prompt: one user turn with ``images`` then ``prompt``."""
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        messages = ([{"role": "system", "content": [{"type": "text", "text": system_prompt}]}] if system_prompt else [])
        messages.append({"role": "user", "content": content})
        batch = self.view.collate([{"messages": messages, "images": list(images)}], add_generation_prompt=True, padding_side="left")
        batch.pop("labels"), batch.pop("index")
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.no_grad()
    def generate(self, images: Sequence, prompt: str, *, system_prompt: str | None = None, **generation_kwargs) -> str:
        """Answer ``prompt`` about ``images`` (PIL images or paths); ``generation_kwargs`` go to ``generate``.

        Defaults to greedy decoding of at most 64 new tokens.
        """
        batch = self.prompt_batch(images, prompt, system_prompt)
        soft_mask = batch.pop("soft_prompt_mask")
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.view.dtype)
        kwargs = {"max_new_tokens": 64, "do_sample": False, **generation_kwargs}
        was_training = self.view.model.training
        self.view.model.eval()
        try:
            with self.view.soft_prompt_mask(soft_mask):
                out = self.view.base_model.generate(**batch, **kwargs)
        finally:
            self.view.model.train(was_training)
        new = out[0, batch["input_ids"].shape[1]:]
        return self.view.tokenizer.decode(new, skip_special_tokens=True)
