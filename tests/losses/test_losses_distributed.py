"""Two gloo ranks on CPU: distributed losses and DDP-averaged gradients equal one process on the
concatenated batch. A single spawn runs every check (process start dominates the cost)."""

import functools
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from tunevl.losses import gather_with_grad, info_nce, sequence_logps, sigmoid_loss
from tunevl.losses.distributed import world_info

WORLD = 2


def _close(got, want, msg=""):
    # torch.allclose rather than torch.testing.assert_close: the latter costs ~1.5 s of imports per worker.
    assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-10, atol=1e-12), f"{msg}\n{got}\n{want}"


def _ddp_average(t):
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / WORLD


def _check_gather(rank):
    assert world_info() == (rank, WORLD)
    sizes = [2, 3]
    local = torch.full((sizes[rank], 2), float(rank + 1), dtype=torch.float64, requires_grad=True)
    out = gather_with_grad(local)
    _close(out, torch.cat([torch.full((n, 2), float(r + 1), dtype=torch.float64) for r, n in enumerate(sizes)]))
    weight = (rank + 1) * torch.arange(10, dtype=torch.float64).view(5, 2)
    (out * weight).sum().backward()
    start = sum(sizes[:rank])
    # Backward sums the two ranks' upstream gradients (weights x1 and x2) over this rank's rows.
    _close(local.grad, 3 * torch.arange(10, dtype=torch.float64).view(5, 2)[start : start + sizes[rank]])


def _embed(x_img, x_txt, proj_img, proj_txt):
    img = F.normalize(x_img @ proj_img, dim=-1)
    txt = F.normalize(x_txt @ proj_txt, dim=-1)
    img.retain_grad()
    txt.retain_grad()
    return img, txt


def _check_contrastive(rank, sizes, name, loss_fn, scale_shape, with_bias, solo_group):
    g = torch.Generator().manual_seed(sum(sizes) * 7 + len(name))
    n_total, d_in, d = sum(sizes), 5, 6
    x_img = torch.randn(n_total, d_in, generator=g, dtype=torch.float64)
    x_txt = torch.randn(n_total, d_in, generator=g, dtype=torch.float64)

    def leaves():
        gl = torch.Generator().manual_seed(1)
        proj_img = torch.randn(d_in, d, generator=gl, dtype=torch.float64).requires_grad_()
        proj_txt = torch.randn(d_in, d, generator=gl, dtype=torch.float64).requires_grad_()
        scale = torch.full(scale_shape, 9.0, dtype=torch.float64, requires_grad=True)
        bias = torch.full(scale_shape, -2.5, dtype=torch.float64, requires_grad=True)
        return proj_img, proj_txt, scale, bias

    # Single process on the concatenated batch (a one-rank group: nothing is gathered).
    ref_params = leaves()
    ref_img, ref_txt = _embed(x_img, x_txt, *ref_params[:2])
    ref_loss = loss_fn(ref_img, ref_txt, ref_params[2], ref_params[3] if with_bias else None, group=solo_group)
    ref_loss.backward()

    # This rank's share.
    params = leaves()
    start, n = sum(sizes[:rank]), sizes[rank]
    img, txt = _embed(x_img[start : start + n], x_txt[start : start + n], *params[:2])
    loss = loss_fn(img, txt, params[2], params[3] if with_bias else None, group=None)
    loss.backward()

    msg = f"{name} sizes={sizes} rank={rank}"
    if name == "info_nce":
        _close(loss, ref_loss, msg)  # every rank returns the global loss
    else:
        _close(_ddp_average(loss), ref_loss, msg)  # ranks hold shares
    # DDP divides the summed parameter gradients by the world size; for the embeddings that means
    # local_grad / WORLD is what reaches any shared parameter upstream of them.
    _close(img.grad / WORLD, ref_img.grad[start : start + n], msg)
    _close(txt.grad / WORLD, ref_txt.grad[start : start + n], msg)
    for p, ref_p in zip(params, ref_params):
        if p.grad is None:  # bias unused
            assert ref_p.grad is None
            continue
        _close(_ddp_average(p.grad), ref_p.grad, msg)


def _check_chunk_sync(rank):
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(4, 9, dtype=torch.float64)
    hidden = torch.randn(2, 8, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 9, (2, 8), generator=g)
    if rank == 1:
        labels[:, 2:] = -100  # 2 scored tokens here, 14 on rank 0
    calls = []
    head.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    # no_grad: the checkpointed path imports torch._dynamo (~1.5 s); the chunk count logic is shared.
    with torch.no_grad():
        out = sequence_logps(hidden, head, labels, chunk_size=3, sync_chunk_count=True)
        assert len(calls) == 5, calls  # ceil(14 / 3) on both ranks
        _close(out, sequence_logps(hidden, head, labels, 3, sync_chunk_count=False))
        assert len(calls) == 5 + (5 if rank == 0 else 1)
        # The default syncs only for a ZeRO-3-partitioned head (no collective, no host sync otherwise).
        _close(out, sequence_logps(hidden, head, labels, 3))
    assert len(calls) == 5 + 2 * (5 if rank == 0 else 1)


def _worker(rank, init_file):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        _check_gather(rank)
        solo_groups = [dist.new_group([r]) for r in range(WORLD)]  # collective: every rank creates both
        cases = [  # (name, loss, logit_scale shape, with logit_bias)
            ("info_nce", info_nce, (), False),
            ("info_nce_local", functools.partial(info_nce, local_loss=True), (1,), True),
            ("sigmoid", sigmoid_loss, (1,), True),
            ("sigmoid", sigmoid_loss, (), True),
        ]
        for sizes in [(4, 4), (5, 2), (3, 0)]:  # equal, unequal, and a rank without records
            for name, fn, scale_shape, with_bias in cases:
                _check_contrastive(rank, sizes, name, fn, scale_shape, with_bias, solo_groups[rank])
        _check_chunk_sync(rank)
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.timeout(240)
def test_distributed_losses_match_single_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"),), nprocs=WORLD, join=True)
