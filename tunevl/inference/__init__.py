"""What ``tunevl.load`` returns: the inference object of a bundle's family kind.

- :class:`DualEncoder` (CLIP, SigLIP): ``embed_images``, ``embed_texts``, ``classify``;
- :class:`Generator` (LLaVA, Qwen2-VL, ...): ``generate``;
- :class:`Embedder` (an LVLM with embedding prompts, VladVA): ``embed_images``, ``embed_texts``, ``classify``, ``generate``.
"""

from __future__ import annotations

from pathlib import Path

from tunevl.inference.dual_encoder import DualEncoder
from tunevl.inference.embedder import Embedder
from tunevl.inference.generator import Generator

__all__ = ["DualEncoder", "Embedder", "Generator", "evaluation_target", "for_view", "load", "resolve_device"]


def for_view(view):
    """The inference object of a family view: :class:`DualEncoder` or :class:`Generator`, by the family's kind;
    :class:`Embedder` for an LVLM with embedding prompts."""
    from tunevl.models.registry import family_kind

    if getattr(view, "embedding_prompts", None) is not None:
        return Embedder(view)
    return Generator(view) if family_kind(view.family) == "generative" else DualEncoder(view)


def evaluation_target(view, batch_size: int | None = None):
    """What the training loop evaluates: the :class:`Embedder` of an LVLM with embedding prompts, else the view."""
    if getattr(view, "embedding_prompts", None) is not None:
        return Embedder(view, batch_size=batch_size or 16)
    return view


def load(
    path_or_id: str | Path,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    device="auto",
    base_model: str | None = None,
    base_revision: str | None = None,
    quantize: bool = True,
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
        quantize: A QLoRA bundle loads on its base quantised as in training (needs ``bitsandbytes``); False
            loads the unquantised base.

    Raises:
        BundleError: newer ``format_version``, a different base model, or a LoRA that matches no module.
    """
    from tunevl.adapters.bundle import load_bundle

    view = load_bundle(
        path_or_id, revision=revision, trust_remote_code=trust_remote_code, base_model=base_model, base_revision=base_revision,
        quantize=quantize,
    )
    return for_view(view).to(resolve_device(device))


def resolve_device(device="auto"):
    """``auto`` (or None): the GPU when there is one, else the CPU; anything else as ``torch.device`` reads it."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        from tunevl.errors import BundleError

        raise BundleError(f"device: {device!r} is not a device (auto, cpu, cuda, cuda:1, ...): {err}") from None
