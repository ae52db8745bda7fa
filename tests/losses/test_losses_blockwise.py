"""Blockwise contrastive losses: values and gradients equal the direct path, and peak memory drops."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from tunevl.losses import info_nce, sigmoid_loss
from tunevl.losses import blockwise
from tunevl.losses.blockwise import auto_block_size


def _inputs(n, d=6, dtype=torch.float64, seed=0, scale_shape=(1,)):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).to(dtype).requires_grad_()
    txt = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).to(dtype).requires_grad_()
    scale = torch.full(scale_shape, 12.5, dtype=dtype, requires_grad=True)
    bias = torch.full(scale_shape, -3.0, dtype=dtype, requires_grad=True)
    return [img, txt, scale, bias]


def _value_and_grads(fn, inputs, **kwargs):
    loss = fn(*inputs, **kwargs)
    return loss, torch.autograd.grad(loss, inputs)


def _assert_same(got, want, rtol, atol):
    (loss, grads), (ref_loss, ref_grads) = got, want
    assert loss.shape == ref_loss.shape == () and loss.dtype == ref_loss.dtype
    torch.testing.assert_close(loss, ref_loss, rtol=rtol, atol=atol)  # n = 1: info_nce is exactly 0
    for name, g, r in zip(("image", "text", "scale", "bias"), grads, ref_grads):
        # The info_nce bias gradient is 0 up to rounding on both paths: compared absolutely.
        torch.testing.assert_close(g, r, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("fn", [info_nce, sigmoid_loss])
@pytest.mark.parametrize("n,block", [(1, 1), (5, 2), (17, 4), (17, 16), (17, 17), (17, 64), (64, 8)])
def test_blockwise_equals_direct_fp64(fn, n, block):
    inputs = _inputs(n, seed=n)
    want = _value_and_grads(fn, inputs, block_size=0)
    got = _value_and_grads(fn, inputs, block_size=block)
    _assert_same(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fn", [info_nce, sigmoid_loss])
@pytest.mark.parametrize("scale_shape", [(), (1,)])
def test_blockwise_equals_direct_fp32(fn, scale_shape):
    inputs = _inputs(300, d=32, dtype=torch.float32, seed=3, scale_shape=scale_shape)
    want = _value_and_grads(fn, inputs, block_size=0)
    got = _value_and_grads(fn, inputs, block_size=64)  # 300 = 4 blocks of 64 + 44
    _assert_same(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn", [info_nce, sigmoid_loss])
def test_blockwise_python_scalars_and_no_bias(fn):
    img, txt, _, _ = _inputs(9)
    want = fn(img, txt, 7.0, None if fn is info_nce else -1.0, block_size=0)
    got = fn(img, txt, 7.0, None if fn is info_nce else -1.0, block_size=4)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    got_grads = torch.autograd.grad(got, [img, txt])
    for g, w in zip(got_grads, torch.autograd.grad(want, [img, txt])):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fn", [info_nce, sigmoid_loss])
def test_blockwise_large_logits_stay_finite(fn):
    # Logits up to +-100 in fp32: the online column logsumexp rescales without overflow.
    img, txt, _, _ = _inputs(40, d=4, dtype=torch.float32, seed=4)
    img.data[:5] = txt.data[:5]
    scale = torch.tensor(100.0, requires_grad=True)
    got = _value_and_grads(fn, [img, txt, scale, torch.tensor(5.0, requires_grad=True)], block_size=7)
    want = _value_and_grads(fn, [img, txt, scale, torch.tensor(5.0, requires_grad=True)], block_size=0)
    assert torch.isfinite(got[0]) and all(torch.isfinite(g).all() for g in got[1])
    _assert_same(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fn", [info_nce, sigmoid_loss])
def test_blockwise_under_autocast_computes_in_fp32(fn):
    img, txt, scale, bias = (t.detach().float() for t in _inputs(20, d=16, seed=5))
    want = fn(img, txt, scale, bias, block_size=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fn(img, txt, scale, bias, block_size=3)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("fn", [info_nce, sigmoid_loss])
def test_blockwise_empty_batch_is_zero_with_graph(fn):
    img, txt = torch.zeros(0, 4, requires_grad=True), torch.zeros(0, 4, requires_grad=True)
    scale = torch.tensor(10.0, requires_grad=True)
    loss = fn(img, txt, scale, torch.tensor(-1.0), block_size=2)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert img.grad.shape == (0, 4) and scale.grad.item() == 0.0


def test_auto_block_size():
    limit = blockwise.BLOCK_ELEMENTS
    assert auto_block_size(4096, 4096, None) is None  # 2^24 logits: direct
    assert auto_block_size(4097, 4097, None) == limit // 4097
    assert auto_block_size(32768, 32768, None) == limit // 32768 == 512
    assert auto_block_size(10**6, 32, None) == limit // 32  # tall matrices (local_loss, one text per class) too
    assert auto_block_size(32768, 32768, 0) is None and auto_block_size(8, 8, 3) == 3
    with pytest.raises(ValueError, match="block_size"):
        auto_block_size(8, 8, -1)


@pytest.mark.parametrize("fn", [info_nce, sigmoid_loss])
def test_automatic_choice_goes_blockwise_above_the_limit(fn, monkeypatch):
    inputs = _inputs(12)
    monkeypatch.setattr(blockwise, "BLOCK_ELEMENTS", 100)  # 12 x 12 logits > 100: blocks of 8 rows

    def names(loss):
        seen, stack = set(), [loss.grad_fn]
        while stack:
            node = stack.pop()
            if node is not None and node not in seen:
                seen.add(node)
                stack += [n for n, _ in node.next_functions]
        return {type(n).__name__ for n in seen}

    assert "_BlockwisePairsBackward" in names(fn(*inputs))
    assert "_BlockwisePairsBackward" not in names(fn(*inputs, block_size=0))
    _assert_same(_value_and_grads(fn, inputs), _value_and_grads(fn, inputs, block_size=0), rtol=1e-10, atol=1e-12)


_PEAK = textwrap.dedent("""
    import json, sys
    import torch, torch.nn.functional as F
    from tunevl.losses import info_nce, sigmoid_loss
    torch.set_num_threads(1)
    n, d = int(sys.argv[1]), 64
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(n, d, generator=g), dim=-1).requires_grad_()
    txt = F.normalize(torch.randn(n, d, generator=g), dim=-1).requires_grad_()
    scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-5.0, requires_grad=True)

    def peak_kib(fn, block_size):
        img.grad = txt.grad = None
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak resident size to the current one
        status = lambda key: int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
        base = status("VmRSS")
        fn(img, txt, scale, bias, block_size=block_size).backward()
        return status("VmHWM") - base

    out = {}
    for fn in (info_nce, sigmoid_loss):
        peak_kib(fn, 64)  # warm-up: first-call allocations of the kernels
        out[fn.__name__] = {"blockwise": peak_kib(fn, 64), "direct": peak_kib(fn, 0)}
    print(json.dumps(out))
""")


def test_blockwise_peak_memory():
    """Peak resident memory of forward + backward, blockwise (64-row blocks) vs the direct path, in a fresh
    process: the direct path holds several N x N fp32 matrices, the blockwise one a few 64 x N blocks."""
    n = 2048
    # A fixed mmap threshold: freed tensors go back to the system at once, so the resident size follows the live
    # tensors (glibc's dynamic threshold otherwise keeps freed 16 MiB blocks in the heap for the next loss to reuse).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", _PEAK, str(n)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    peaks = json.loads(out.stdout.strip().splitlines()[-1])
    matrix_kib = n * n * 4 // 1024  # one N x N fp32 matrix: 16 MiB
    for name, peak in peaks.items():
        assert peak["direct"] >= 4 * matrix_kib, (name, peak)  # the measurement sees the direct path's matrices
        assert peak["blockwise"] <= matrix_kib // 2, (name, peak)  # never one N x N matrix (measured: ~4 MiB)


def test_objectives_take_loss_block_size():
    import tunevl
    from tunevl.objectives import Contrastive, Sigmoid

    img, txt, scale, bias = _inputs(10)
    for cls in (Contrastive, Sigmoid):
        got = next(iter(cls(loss_block_size=3).loss(img, txt, scale, bias).values()))
        want = next(iter(cls(loss_block_size=0).loss(img, txt, scale, bias).values()))
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
        with pytest.raises(ValueError, match="loss_block_size"):
            cls(loss_block_size=-2)
    tunevl.load_recipe("quickstart", ["objectives.0.loss_block_size=512"]).validate()  # a recipe key
