"""negclip_loss: NegCLIP's layout written out in fp64 (one process), and 2 gloo ranks equal to one
process on the concatenated batch (positives and hard captions gathered separately)."""

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from tunevl.losses import info_nce, negclip_loss


def _unit(n, d, g):
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)


def ref_negclip(I, Ij, T, Tj, Tneg, Tneg_j, scale):
    """vinid/neg_clip as written: images cat[I, I_j] (2B) against texts cat[T, T_j, Tneg, Tneg_j] (4B);
    (CE(logits_per_image, arange(2B)) + CE(logits_per_text[:2B], arange(2B))) / 2."""
    images = torch.cat([I, Ij])
    texts = torch.cat([T, Tj, Tneg, Tneg_j])
    logits_per_image = scale * images @ texts.T
    logits_per_text = logits_per_image.T
    labels = torch.arange(images.shape[0])
    n = images.shape[0]
    loss_i = sum(torch.logsumexp(logits_per_image[k], 0) - logits_per_image[k, labels[k]] for k in range(n)) / n
    loss_t = sum(torch.logsumexp(logits_per_text[k], 0) - logits_per_text[k, labels[k]] for k in range(n)) / n
    return (loss_i + loss_t) / 2


def test_negclip_loss_is_negclips_layout_with_gradients():
    g = torch.Generator().manual_seed(0)
    B, d = 4, 6
    parts = [_unit(B, d, g).requires_grad_() for _ in range(6)]
    I, Ij, T, Tj, Tneg, Tneg_j = parts
    scale = torch.tensor(12.0, dtype=torch.float64, requires_grad=True)
    loss = negclip_loss(torch.cat([I, Ij]), torch.cat([T, Tj]), torch.cat([Tneg, Tneg_j]), scale)
    ref = ref_negclip(I, Ij, T, Tj, Tneg, Tneg_j, scale)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    for got, want in zip(torch.autograd.grad(loss, parts + [scale]), torch.autograd.grad(ref, parts + [scale])):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_without_hard_captions_it_is_info_nce_and_bias_cancels():
    g = torch.Generator().manual_seed(1)
    img, txt = _unit(5, 4, g), _unit(5, 4, g)
    none = img.new_zeros(0, 4)
    torch.testing.assert_close(negclip_loss(img, txt, none, 7.0), info_nce(img, txt, 7.0), rtol=1e-12, atol=0)
    neg = _unit(3, 4, g)
    torch.testing.assert_close(negclip_loss(img, txt, neg, 7.0, -4.0), negclip_loss(img, txt, neg, 7.0), rtol=1e-12, atol=0)
    # Hard captions only make the image-to-text task harder: the loss grows.
    assert negclip_loss(img, txt, neg, 7.0) > info_nce(img, txt, 7.0)


def test_empty_batch_is_a_connected_zero():
    img = torch.zeros(0, 4, dtype=torch.float64, requires_grad=True)
    loss = negclip_loss(img, img, img, 5.0)
    assert loss.item() == 0 and loss.requires_grad


# ---- two processes ----------------------------------------------------------------------------

def _close(got, want, msg=""):
    assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-10, atol=1e-12), f"{msg}\n{got}\n{want}"


def _check(rank, world, pos_sizes, neg_sizes, local_loss, solo):
    g = torch.Generator().manual_seed(sum(pos_sizes) * 31 + sum(neg_sizes))
    P, H, d_in, d = sum(pos_sizes), sum(neg_sizes), 5, 4
    x_img, x_txt, x_neg = (torch.randn(n, d_in, generator=g, dtype=torch.float64) for n in (P, P, H))

    def leaves():
        gl = torch.Generator().manual_seed(2)
        proj_img = torch.randn(d_in, d, generator=gl, dtype=torch.float64).requires_grad_()
        proj_txt = torch.randn(d_in, d, generator=gl, dtype=torch.float64).requires_grad_()
        return proj_img, proj_txt, torch.tensor(9.0, dtype=torch.float64, requires_grad=True)

    def embed(x, proj):
        return F.normalize(x @ proj, dim=-1)

    # One process on the concatenated batch: every rank's positives first, then every rank's hard captions.
    ref = leaves()
    ref_loss = negclip_loss(embed(x_img, ref[0]), embed(x_txt, ref[1]), embed(x_neg, ref[1]), ref[2], group=solo)
    ref_loss.backward()

    params = leaves()
    ps, hs = sum(pos_sizes[:rank]), sum(neg_sizes[:rank])
    rows, negs = slice(ps, ps + pos_sizes[rank]), slice(hs, hs + neg_sizes[rank])
    loss = negclip_loss(embed(x_img[rows], params[0]), embed(x_txt[rows], params[1]), embed(x_neg[negs], params[1]),
                        params[2], local_loss=local_loss)
    loss.backward()
    msg = f"pos={pos_sizes} neg={neg_sizes} local={local_loss} rank={rank}"
    shared = loss.detach().clone()
    dist.all_reduce(shared)
    _close(shared / world if local_loss else loss, ref_loss, msg)
    for p, ref_p in zip(params, ref):  # DDP averages parameter gradients over ranks
        grad = p.grad.detach().clone()
        dist.all_reduce(grad)
        _close(grad / world, ref_p.grad, msg)


def _worker(rank, init_file, world):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        solo = [dist.new_group([r]) for r in range(world)]
        # Equal; unequal positives and hard captions (rows must stay aligned); a rank without hard
        # captions; a rank without any record.
        for pos_sizes, neg_sizes in [((4, 4), (4, 4)), ((5, 2), (1, 3)), ((3, 3), (0, 2)), ((3, 0), (2, 0))]:
            for local_loss in (False, True):
                _check(rank, world, pos_sizes, neg_sizes, local_loss, solo[rank])
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_ranks_equal_one_process_on_the_concatenated_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), 2), nprocs=2, join=True)
