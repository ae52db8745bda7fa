"""Contrastive image-text losses (CLIP InfoNCE and SigLIP sigmoid), exact under data parallelism.

Conventions shared by both functions:

* Embeddings are L2-normalised by the caller; ``logit_scale`` is the multiplier (already
  exponentiated), a float or a tensor of shape ``[]`` or ``[1]``; ``logit_bias`` likewise.
* Logits and losses are computed in at least fp32, also under autocast (bf16/fp16 inputs are
  upcast after any cross-rank exchange, which travels in the input dtype).
* Under an initialised ``torch.distributed`` group with more than one rank, features are gathered
  with gradient (:func:`~tunevl.losses.distributed.gather_with_grad`). Ranks may hold different
  batch sizes, including 0; ``N`` below is the global (concatenated) batch size. With the usual
  data-parallel averaging of parameter gradients over ranks (DDP, DeepSpeed), the gradients equal
  those of one process on the concatenated batch.
* An empty global batch gives a zero loss that still depends on the inputs, so a rank can run the
  graph with no records (ZeRO-3 needs every rank to run every graph).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from tunevl.losses.distributed import gather_sizes, gather_with_grad, world_info

__all__ = ["info_nce", "sigmoid_loss"]

ScalarLike = torch.Tensor | float


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def _check_pair(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> None:
    if image_embeds.ndim != 2 or image_embeds.shape != text_embeds.shape:
        raise ValueError(
            "image_embeds and text_embeds must both be [batch, dim] with equal shapes, got "
            f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}"
        )


def _layout(image_embeds: torch.Tensor, text_embeds: torch.Tensor, group, sizes=None):
    """(compute dtype, local n, world size, every rank's n, global N, this rank's first global row)."""
    _check_pair(image_embeds, text_embeds)
    rank, world = world_info(group)
    n = image_embeds.shape[0]
    if sizes is None:
        sizes = gather_sizes(n, group, image_embeds.device) if world > 1 else [n]
    elif len(sizes) != world or sizes[rank] != n:
        raise ValueError(f"sizes {list(sizes)} do not match world size {world} and this rank's {n} rows")
    return _compute_dtype(image_embeds), n, world, sizes, sum(sizes), sum(sizes[:rank])


def _logits(a: torch.Tensor, b: torch.Tensor, scale: ScalarLike, bias: ScalarLike | None) -> torch.Tensor:
    # Autocast would run the matmul in bf16/fp16 despite the fp32 inputs.
    with torch.autocast(device_type=a.device.type, enabled=False):
        logits = scale * (a @ b.T)
        return logits if bias is None else logits + bias


def info_nce(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: ScalarLike,
    logit_bias: ScalarLike | None = None,
    *,
    local_loss: bool = False,
    group: dist.ProcessGroup | None = None,
    sizes: Sequence[int] | None = None,
) -> torch.Tensor:
    """Symmetric CLIP contrastive loss, ``(CE(L_img, y) + CE(L_txt, y)) / 2`` with ``y`` the matching pair.

    ``L_img = logit_scale * img @ txt.T (+ logit_bias)`` and ``L_txt`` is its transpose; each cross
    entropy is a mean over the ``N`` rows (Radford et al. 2021, https://arxiv.org/abs/2103.00020;
    distributed scheme of open_clip's ``ClipLoss``).

    What the returned value is:

    * single process: the loss on the batch.
    * ``world_size > 1, local_loss=False``: every rank gathers all ``N`` pairs and returns the same
      global loss on the concatenated batch (``N x N`` logits per rank). The gradient reaching a
      local embedding is ``world_size`` times its single-process gradient (each rank back-propagates
      the whole loss); DDP's averaging over ranks divides it back out. ``logit_scale``/``logit_bias``
      get the single-process gradient on every rank, which averaging leaves unchanged.
    * ``world_size > 1, local_loss=True``: rank ``r`` scores only its own ``n_r`` rows against all
      ``N`` columns (``n_r x N`` logits, labels ``arange(n_r) + sum(n_0..n_{r-1})``) and returns
      ``(sum of its 2 * n_r cross-entropy terms) / (2 * N / world_size)``. The mean over ranks
      equals the global loss (with equal batches ``N / world_size`` is the local batch size, as in
      open_clip), and so do the gradients after DDP averaging.

    Args:
        image_embeds: ``[n, d]`` L2-normalised image embeddings of this rank.
        text_embeds: ``[n, d]`` L2-normalised text embeddings; row ``i`` matches image ``i``.
        logit_scale: Multiplier of the cosine similarities (already exponentiated).
        logit_bias: Optional additive bias of the logits.
        local_loss: Score only local rows against the gathered columns (O(n * N) memory).
        group: Process group; the default group when ``None``.
        sizes: Every rank's batch size, when the caller knows them (the training loop gives every rank
            equal micro-batches); saves a collective and a host synchronisation per call.

    Returns:
        Scalar loss in at least fp32, see above.
    """
    dtype, n, world, sizes, total, offset = _layout(image_embeds, text_embeds, group, sizes)
    all_img = gather_with_grad(image_embeds, group, sizes=sizes).to(dtype)
    all_txt = gather_with_grad(text_embeds, group, sizes=sizes).to(dtype)
    denom = 2 * max(total, 1)

    if local_loss and world > 1:
        img, txt = image_embeds.to(dtype), text_embeds.to(dtype)
        labels = torch.arange(offset, offset + n, device=img.device)
        loss_sum = F.cross_entropy(_logits(img, all_txt, logit_scale, logit_bias), labels, reduction="sum")
        loss_sum = loss_sum + F.cross_entropy(
            _logits(txt, all_img, logit_scale, logit_bias), labels, reduction="sum"
        )
        return loss_sum * world / denom

    labels = torch.arange(total, device=all_img.device)
    logits = _logits(all_img, all_txt, logit_scale, logit_bias)
    loss_sum = F.cross_entropy(logits, labels, reduction="sum") + F.cross_entropy(
        logits.T, labels, reduction="sum"
    )
    return loss_sum / denom


def sigmoid_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: ScalarLike,
    logit_bias: ScalarLike | None,
    *,
    group: dist.ProcessGroup | None = None,
    sizes: Sequence[int] | None = None,
) -> torch.Tensor:
    """SigLIP pairwise sigmoid loss (Zhai et al. 2023, https://arxiv.org/abs/2303.15343).

    ``loss = -sum_ij log sigmoid(y_ij * (logit_scale * img_i . txt_j + logit_bias)) / n`` with
    ``y_ij = +1`` for matching pairs (the diagonal) and ``-1`` otherwise: summed over texts, averaged
    over images. Computed as ``sum softplus(logits) - sum positive logits``, so no sign matrix is
    built.

    Distributed (``world_size > 1``): images stay local and the texts of all ranks are gathered
    with gradient; the remote ones contribute negative-only terms. Rank ``r`` returns
    ``(sum over its n_r images and all N texts) / (N / world_size)``, i.e. divided by the mean
    per-rank batch (its local batch size when batches are equal, as in big_vision/open_clip). The
    mean over ranks equals the single-process loss on the concatenated batch, and so do the
    gradients after DDP averaging.

    Args:
        image_embeds: ``[n, d]`` L2-normalised image embeddings of this rank.
        text_embeds: ``[n, d]`` L2-normalised text embeddings; row ``i`` matches image ``i``.
        logit_scale: Multiplier of the cosine similarities (already exponentiated; SigLIP inits 10).
        logit_bias: Additive bias of the logits (SigLIP inits -10); ``None`` means 0.
        group: Process group; the default group when ``None``.
        sizes: Every rank's batch size, when known (see :func:`info_nce`).

    Returns:
        Scalar loss in at least fp32, see above.
    """
    dtype, n, world, sizes, total, offset = _layout(image_embeds, text_embeds, group, sizes)
    all_txt = gather_with_grad(text_embeds, group, sizes=sizes).to(dtype)
    logits = _logits(image_embeds.to(dtype), all_txt, logit_scale, logit_bias)
    # -log sigmoid(-x) = softplus(x) and -log sigmoid(x) = softplus(x) - x; logaddexp(x, 0) is a
    # softplus without the overflow/threshold approximations.
    loss_sum = torch.logaddexp(logits, logits.new_zeros(())).sum()
    loss_sum = loss_sum - logits[:, offset : offset + n].diagonal().sum()
    return loss_sum * world / max(total, 1)
