"""info_nce and sigmoid_loss against naive fp64 references (single process)."""

import math

import pytest
import torch
import torch.nn.functional as F

from tunevl.losses import info_nce, sigmoid_loss


def _pair(n=6, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return img.to(dtype).requires_grad_(), txt.to(dtype).requires_grad_()


def _param(value, shape, dtype=torch.float64):
    return torch.full(shape, value, dtype=dtype, requires_grad=True)


def ref_info_nce(img, txt, scale, bias=None):
    """Dense fp64 CLIP loss written out: -logit of the match + logsumexp of the row, both directions."""
    logits = scale.double() * img.double() @ txt.double().T
    if bias is not None:
        logits = logits + bias.double()
    n = logits.shape[0]
    loss_i = sum(torch.logsumexp(logits[i], 0) - logits[i, i] for i in range(n)) / n
    loss_t = sum(torch.logsumexp(logits[:, j], 0) - logits[j, j] for j in range(n)) / n
    return (loss_i + loss_t) / 2


def ref_sigmoid(img, txt, scale, bias):
    """Dense fp64 SigLIP loss with an explicit +1/-1 label matrix."""
    logits = scale.double() * img.double() @ txt.double().T + bias.double()
    n = logits.shape[0]
    y = 2 * torch.eye(n, dtype=torch.float64) - 1
    return -F.logsigmoid(y * logits).sum() / n


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("scale_shape", [(), (1,)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_info_nce_matches_reference_fp64(scale_shape, with_bias):
    img, txt = _pair()
    scale = _param(14.3, scale_shape)
    bias = _param(-1.5, scale_shape) if with_bias else None
    inputs = [img, txt, scale] + ([bias] if with_bias else [])
    loss = info_nce(img, txt, scale, bias)
    ref = ref_info_nce(img, txt, scale, bias)
    assert loss.shape == ()
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    for got, want in zip(_grads(loss, inputs), _grads(ref, inputs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_info_nce_bias_cancels_in_value():
    # A constant added to every logit cancels inside each softmax, so the value (and grads) must not move.
    img, txt = _pair()
    scale = _param(10.0, ())
    base = info_nce(img, txt, scale)
    with_bias = info_nce(img, txt, scale, torch.tensor(-7.0, dtype=torch.float64))
    torch.testing.assert_close(with_bias, base, rtol=1e-12, atol=0)


def test_info_nce_fp32_and_bf16_inputs_compute_in_fp32():
    img64, txt64 = _pair(n=16, d=32, seed=1)
    scale = torch.tensor(100.0)
    for dtype, tol in [(torch.float32, 2e-6), (torch.bfloat16, 2e-6)]:
        img, txt = img64.detach().to(dtype), txt64.detach().to(dtype)
        loss = info_nce(img, txt, scale)
        assert loss.dtype == torch.float32
        # Reference on the same (rounded) inputs: a bf16 softmax would be off by ~1e-2.
        torch.testing.assert_close(loss.double(), ref_info_nce(img, txt, scale), rtol=tol, atol=0)


@pytest.mark.parametrize("fn", [info_nce, sigmoid_loss])
def test_autocast_does_not_lower_logit_precision(fn):
    img, txt = (t.detach().float() for t in _pair(n=16, d=32, seed=5))
    scale, bias = torch.tensor(100.0), torch.tensor(-10.0)
    want = fn(img, txt, scale, bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fn(img, txt, scale, bias)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


def test_info_nce_local_loss_is_global_on_one_process():
    img, txt = _pair()
    scale = _param(5.0, (1,))
    torch.testing.assert_close(info_nce(img, txt, scale, local_loss=True), info_nce(img, txt, scale))


def test_info_nce_perfect_alignment_lower_than_random():
    img, txt = _pair(n=8, d=16)
    scale = torch.tensor(50.0, dtype=torch.float64)
    assert info_nce(img, img, scale) < 0.01 < info_nce(img, txt, scale)
    # Uniform logits (scale 0) give exactly log(n).
    assert math.isclose(info_nce(img, txt, 0.0).item(), math.log(8), rel_tol=1e-12)


@pytest.mark.parametrize("scale_shape", [(), (1,)])
def test_sigmoid_loss_matches_reference_fp64(scale_shape):
    img, txt = _pair(n=7, d=4, seed=2)
    scale, bias = _param(10.0, scale_shape), _param(-10.0, scale_shape)
    inputs = [img, txt, scale, bias]
    loss = sigmoid_loss(img, txt, scale, bias)
    ref = ref_sigmoid(img, txt, scale, bias)
    assert loss.shape == ()
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    for got, want in zip(_grads(loss, inputs), _grads(ref, inputs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_sigmoid_loss_matches_scalar_loop():
    img, txt = (t.detach() for t in _pair(n=4, d=3, seed=3))
    t, b = 7.0, -2.0
    total = 0.0
    for i in range(4):
        for j in range(4):
            z = t * float(img[i] @ txt[j]) + b
            y = 1.0 if i == j else -1.0
            total += math.log1p(math.exp(-y * z))
    got = sigmoid_loss(img, txt, torch.tensor(t, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    assert math.isclose(got.item(), total / 4, rel_tol=1e-12)


def test_sigmoid_loss_large_logits_fp32():
    # Logits up to +-100: no overflow and no loss of the positive terms in fp32.
    img64, txt64 = _pair(n=8, d=8, seed=4)
    img, txt = img64.detach().float().requires_grad_(), txt64.detach().float().requires_grad_()
    img.data[0] = txt.data[0]  # one confidently matching pair
    scale, bias = _param(100.0, (1,), torch.float32), _param(0.0, (1,), torch.float32)
    loss = sigmoid_loss(img, txt, scale, bias)
    ref = ref_sigmoid(img, txt, scale, bias)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=0)
    inputs = [img, txt, scale, bias]
    for got, want in zip(_grads(loss, inputs), _grads(ref, inputs)):
        torch.testing.assert_close(got.double(), want.double(), rtol=1e-4, atol=1e-5)


def test_sigmoid_loss_none_bias_is_zero_bias():
    img, txt = _pair()
    scale = torch.tensor(3.0, dtype=torch.float64)
    torch.testing.assert_close(
        sigmoid_loss(img, txt, scale, None), sigmoid_loss(img, txt, scale, torch.zeros((), dtype=torch.float64))
    )


@pytest.mark.parametrize("fn", [info_nce, sigmoid_loss])
def test_empty_batch_gives_zero_with_graph(fn):
    img = torch.zeros(0, 4, requires_grad=True)
    txt = torch.zeros(0, 4, requires_grad=True)
    scale = torch.tensor(10.0, requires_grad=True)
    loss = fn(img, txt, scale, torch.tensor(-1.0))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert img.grad.shape == (0, 4) and scale.grad.item() == 0.0


@pytest.mark.parametrize("fn", [info_nce, sigmoid_loss])
def test_mismatched_shapes_raise(fn):
    with pytest.raises(ValueError, match="equal shapes"):
        fn(torch.zeros(3, 4), torch.zeros(2, 4), 1.0, 0.0)


def test_gather_with_grad_is_identity_on_one_process():
    from tunevl.losses import gather_with_grad
    from tunevl.losses.distributed import gather_sizes, world_info

    t = torch.randn(3, 2)
    assert gather_with_grad(t) is t and world_info() == (0, 1) and gather_sizes(3) == [3]
