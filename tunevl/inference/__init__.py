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

__all__ = ["DualEncoder", "Embedder", "Generator", "evaluation_target", "for_view", "load"]


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
    device=None,
    base_model: str | None = None,
    base_revision: str | None = None,
):
    """Rebuild the inference object of a bundle from a local folder or a Hub repo id.

    Args:
        path_or_id: A bundle folder (``train.output_dir``) or ``user/repo`` on the Hub.
        revision: Hub revision of the bundle.
        trust_remote_code: Allow code shipped with the base checkpoint to run.
        device: Where to put the model (default: CPU).
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
    obj = for_view(view)
    return obj.to(device) if device is not None else obj
