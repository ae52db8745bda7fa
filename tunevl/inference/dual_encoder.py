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
        """[C, D] unit class embeddings from hand-written templates; several are ensembled (mean of
        normalised prompt embeddings, renormalised, as in CLIP). Learned prompts: :meth:`class_scores`."""
        from tunevl.eval.zeroshot import class_embeddings

        return class_embeddings(self.embed_texts, classnames, templates)

    @property
    def has_learned_prompts(self) -> bool:
        """True when the bundle learned text prompts (CoOp, CoCoOp), which then replace templates."""
        return getattr(self.view, "text_prompts", None) is not None

    @torch.no_grad()
    def class_scores(self, image_embeds: torch.Tensor, classnames: Sequence[str],
                     templates: str | Sequence[str] | None = None) -> torch.Tensor:
        """[N, C] cosine similarities of unit image embeddings to the classes.

        The classes are embedded with the bundle's learned prompts (any class names, also unseen ones;
        class-specific contexts only for the training classes; CoCoOp's per image) when ``templates``
        is None and the bundle has them; otherwise with ``templates`` (default ``"a photo of a {}."``).
        """
        prompts = getattr(self.view, "text_prompts", None)
        image_embeds = image_embeds.float()
        if prompts is None or templates is not None:
            text = self.class_embeddings(classnames, templates if templates is not None else "a photo of a {}.")
            return image_embeds @ text.T
        class_prompts = prompts.class_prompts(list(classnames))
        n_cls = len(classnames)
        if prompts.meta_net is None:  # one embedding per class: encode the prompts in batches
            text = torch.cat([prompts.encode(self.view, class_prompts.subset(i, i + self.batch_size)).cpu()
                              for i in range(0, n_cls, self.batch_size)])
            return image_embeds @ text.T
        # CoCoOp: every image has its own class embeddings; about batch_size prompts per forward
        step = max(1, self.batch_size // n_cls)
        out = []
        for i in range(0, image_embeds.shape[0], step):
            chunk = image_embeds[i : i + step]
            text = prompts.encode(self.view, class_prompts, chunk.to(self.device)).cpu()
            out.append(torch.einsum("bd,bcd->bc", chunk, text))
        return torch.cat(out)

    @torch.no_grad()
    def classify(self, images: Sequence, classnames: Sequence[str],
                 template: str | Sequence[str] | None = None) -> torch.Tensor:
        """Class probabilities [N, C] (softmax of the scaled logits).

        Args:
            images: PIL images or image paths.
            classnames: The class names (a bundle with learned unified prompts takes unseen names too).
            template: None: the bundle's learned prompts when it has them, else ``"a photo of a {}."``.
                A prompt template with ``{}`` for the class name, or a list of them to ensemble.
        """
        scores = self.class_scores(self.embed_images(images), classnames, template)
        logits = self.view.logit_scale().cpu() * scores
        bias = self.view.logit_bias()
        if bias is not None:
            logits = logits + bias.cpu()
        return logits.softmax(dim=-1)
