"""counting_loss against a direct fp64 reference: values, gradients, row weights, empty batches."""

import math

import pytest
import torch
import torch.nn.functional as F

from tunevl.losses import counting_loss


def _rows(n=5, d=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).requires_grad_() for _ in range(3)]


def ref_counting(img, txt, cf, scale):
    """-log(exp(s_t) / (exp(s_t) + exp(s_cf))) per row with s = scale * dot product, averaged."""
    total = 0.0
    for i in range(img.shape[0]):
        s_t = scale * torch.dot(img[i], txt[i])
        s_cf = scale * torch.dot(img[i], cf[i])
        total = total - torch.log(torch.exp(s_t) / (torch.exp(s_t) + torch.exp(s_cf)))
    return total / img.shape[0]


@pytest.mark.parametrize("scale_shape", [(), (1,)])
def test_counting_loss_matches_reference_and_its_gradients(scale_shape):
    img, txt, cf = _rows()
    scale = torch.full(scale_shape, 20.0, dtype=torch.float64, requires_grad=True)
    loss = counting_loss(img, txt, cf, scale)
    ref = ref_counting(img, txt, cf, scale).reshape(())
    assert loss.shape == ()
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    inputs = [img, txt, cf, scale]
    for got, want in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(ref, inputs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_counting_loss_values_at_known_points():
    e = torch.eye(3, dtype=torch.float64)
    # Caption and counterfactual equally close: log 2 whatever the scale.
    assert math.isclose(counting_loss(e[:1], e[1:2], e[2:3], 50.0).item(), math.log(2), rel_tol=1e-12)
    # Caption identical to the image, counterfactual orthogonal: log(1 + exp(-scale)).
    assert math.isclose(counting_loss(e[:1], e[:1], e[1:2], 3.0).item(), math.log1p(math.exp(-3.0)), rel_tol=1e-12)


def test_empty_batch_is_a_connected_zero():
    img, txt, cf = _rows(n=4)
    empty = counting_loss(img[:0], txt[:0], cf[:0], 10.0)
    assert empty.item() == 0 and empty.requires_grad
    empty.backward()
    assert img.grad is not None and torch.count_nonzero(img.grad) == 0


def test_low_precision_inputs_are_computed_in_fp32():
    img, txt, cf = (t.detach().to(torch.bfloat16) for t in _rows(n=8, d=16, seed=3))
    loss = counting_loss(img, txt, cf, torch.tensor(100.0))
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref_counting(img.double(), txt.double(), cf.double(), 100.0),
                               rtol=1e-5, atol=0)


def test_shape_mismatch_is_a_clear_error():
    img, txt, cf = _rows()
    with pytest.raises(ValueError, match="equal shapes"):
        counting_loss(img, txt, cf[:3], 1.0)
