"""What ``tunevl.load`` returns for dual-encoder bundles (CLIP, SigLIP): embeddings and zero-shot classification."""

from __future__ import annotations

from typing import Sequence

import torch


class DualEncoder:
    """Image and text embeddings (L2-normalised) from a dual-encoder bundle (CLIP, SigLIP).

    Args:
        view: The family view with adapters loaded.
        batch_size: Items per forward pass.
    """

    def __init__(self, view, batch_size: int = 64):
        self.view = view
        self.batch_size = batch_size

    @property
    def model(self):
        """The underlying (peft-wrapped) transformers model."""
        return self.view.model

    def to(self, device) -> "DualEncoder":
        self.view.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.view.model.parameters()).device

    @torch.no_grad()
    def embed_images(self, images: Sequence) -> torch.Tensor:
        """Embed PIL images (or image paths): a [N, D] float tensor of unit vectors."""
        out = [
            self.view.encode_images(self.view.preprocess_images(images[i : i + self.batch_size]).to(self.device))
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(out).cpu()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed strings: a [N, D] float tensor of unit vectors."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = {k: v.to(self.device) for k, v in self.view.tokenize(texts[i : i + self.batch_size]).items()}
            out.append(self.view.encode_texts(**tok))
        return torch.cat(out).cpu()

    @torch.no_grad()
    def class_embeddings(self, classnames: Sequence[str], templates: str | Sequence[str] = "a photo of a {}.") -> torch.Tensor:
        """[C, D] unit class embeddings; several templates are ensembled (mean of normalised
        prompt embeddings, renormalised, as in CLIP)."""
        from tunevl.eval.zeroshot import class_embeddings

        return class_embeddings(self.embed_texts, classnames, templates)

    @torch.no_grad()
    def classify(self, images: Sequence, classnames: Sequence[str],
                 template: str | Sequence[str] = "a photo of a {}.") -> torch.Tensor:
        """Zero-shot class probabilities [N, C] from prompts ``template.format(classname)``.

        Args:
            images: PIL images or image paths.
            classnames: The class names.
            template: One prompt template with ``{}`` for the class name, or a list of
                them to ensemble.
        """
        text = self.class_embeddings(classnames, template)
        logits = self.view.logit_scale().cpu() * self.embed_images(images) @ text.T
        bias = self.view.logit_bias()
        if bias is not None:
            logits = logits + bias.cpu()
        return logits.softmax(dim=-1)
