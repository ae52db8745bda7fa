"""What ``tunevl.load`` returns for LVLM embedder bundles (VladVA): embeddings as from a CLIP bundle, and generation."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


class Embedder:
    """Image and text embeddings (L2-normalised) from a generative LVLM with embedding prompts
    (:mod:`tunevl.models.embedder`): the same API as :class:`~tunevl.inference.DualEncoder`, so the retrieval,
    zero-shot and compositional evaluators take it unchanged; ``generate`` still answers as the LVLM.

    Args:
        view: The LVLM family view with adapters and ``embedding_prompts`` loaded.
        batch_size: Items per forward pass.
        padding_side: How batches are padded (embeddings do not depend on it).
    """

    def __init__(self, view, batch_size: int = 16, padding_side: str = "left"):
        if getattr(view, "embedding_prompts", None) is None:
            raise ValueError("the view has no embedding prompts (adapters.embedding_prompts)")
        self.view = view
        self.batch_size = batch_size
        self.padding_side = padding_side

    @property
    def model(self):
        """The underlying (peft-wrapped) transformers model."""
        return self.view.model

    def to(self, device) -> "Embedder":
        self.view.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.view.device

    def _embed(self, items: Sequence, build, embed) -> torch.Tensor:
        out = []
        for i in range(0, len(items), self.batch_size):
            batch = build(self.view, items[i : i + self.batch_size], padding_side=self.padding_side)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out.append(F.normalize(embed(self.view, batch).float(), dim=-1))
        return torch.cat(out).cpu() if out else torch.empty(0)

    @torch.no_grad()
    def embed_images(self, images: Sequence) -> torch.Tensor:
        """Embed PIL images (or image paths), one image per embedding: a [N, D] float tensor of unit vectors."""
        from tunevl.models.embedder import embed_image_batch, image_batch

        return self._embed([[im] for im in images], image_batch, embed_image_batch)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed strings: a [N, D] float tensor of unit vectors."""
        from tunevl.models.embedder import embed_text_batch, text_batch

        return self._embed(list(texts), text_batch, embed_text_batch)

    @torch.no_grad()
    def class_embeddings(self, classnames: Sequence[str], templates: str | Sequence[str] = "a photo of a {}.") -> torch.Tensor:
        """[C, D] unit class embeddings; several templates are ensembled as in CLIP."""
        from tunevl.eval.zeroshot import class_embeddings

        return class_embeddings(self.embed_texts, classnames, templates)

    @torch.no_grad()
    def classify(self, images: Sequence, classnames: Sequence[str], template: str | Sequence[str] = "a photo of a {}.",
                 logit_scale: float = 100.0) -> torch.Tensor:
        """Zero-shot class probabilities [N, C]: a softmax of ``logit_scale`` times the cosine similarities."""
        return (logit_scale * self.embed_images(images) @ self.class_embeddings(classnames, template).T).softmax(dim=-1)

    def generate(self, images: Sequence, prompt: str, **kwargs) -> str:
        """Answer ``prompt`` about ``images`` as the LVLM (LoRA applied; the embedding soft prompts are not used)."""
        from tunevl.inference.generator import Generator

        return Generator(self.view).generate(images, prompt, **kwargs)
