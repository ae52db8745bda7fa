"""Load a trained bundle into inference code in one call: ``m = tunevl.load(path_or_hub_id)``."""

from __future__ import annotations

from pathlib import Path
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


def resolve_device(device="auto") -> torch.device:
    """``auto`` (or None): the GPU when there is one, else the CPU; anything else as ``torch.device`` reads it."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        from tunevl.errors import BundleError

        raise BundleError(f"device: {device!r} is not a device (auto, cpu, cuda, cuda:1, ...): {err}") from None


def load(
    path_or_id: str | Path,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    device="auto",
    base_model: str | None = None,
    base_revision: str | None = None,
):
    """Rebuild the inference object of a bundle from a local folder or a Hub repo id.

    Args:
        path_or_id: A bundle folder (``train.output_dir``) or ``user/repo`` on the Hub.
        revision: Hub revision of the bundle.
        trust_remote_code: Allow code shipped with the base checkpoint to run.
        device: Where to put the model: ``auto`` (default) is the GPU when there is one, else the CPU;
            or ``cuda``, ``cuda:1``, ``cpu``...
        base_model: A copy of the base model to use instead of the recorded id or path; its
            config must hash to the recorded value.
        base_revision: Revision of ``base_model``.

    Raises:
        BundleError: newer ``format_version``, a different base model, or a LoRA that matches no module.
    """
    from tunevl.adapters.bundle import load_bundle

    view = load_bundle(
        path_or_id, revision=revision, trust_remote_code=trust_remote_code, base_model=base_model, base_revision=base_revision
    )
    return view.inference_class()(view).to(resolve_device(device))
