"""sequence_logps / next_token_loss against full-logits references, memory bounds, and dpo_loss."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from tunevl.losses import dpo_loss, next_token_loss, sequence_logps
from tunevl.losses.sequence import sequence_token_counts

B, T, H, V = 3, 11, 8, 37


def _batch(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g, dtype=dtype).requires_grad_()
    head = torch.nn.Linear(H, V, dtype=dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, H, generator=g, dtype=dtype))
        head.bias.copy_(torch.randn(V, generator=g, dtype=dtype))
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < 0.3] = -100  # scattered ignored tokens
    labels[0, :4] = -100  # a prompt prefix
    labels[2] = -100  # a sequence with nothing to score
    labels[1, -1] = 5  # the last position is scored as a target
    return hidden, head, labels


def ref_sequence_logps(hidden, head, labels):
    """Full [B, T, V] logits, log_softmax, shift by one, mask, sum: the naive computation."""
    logp = torch.log_softmax(head(hidden).double(), dim=-1)[:, :-1]
    targets = labels[:, 1:]
    valid = targets != -100
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * valid).sum(dim=1)


def _n_valid(labels):
    return int((labels[:, 1:] != -100).sum())


def test_fixture_has_partial_chunks():
    _, _, labels = _batch()
    m = _n_valid(labels)
    assert m == 14  # chunk sizes 4 and 5 leave a partial chunk; 14 is exactly one chunk


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 14, 1024])
def test_sequence_logps_matches_full_logits(chunk_size):
    hidden, head, labels = _batch()
    weights = torch.tensor([0.7, -1.3, 2.0], dtype=torch.float64)  # distinct per-sequence upstream grads
    params = [hidden, head.weight, head.bias]

    got = sequence_logps(hidden, head, labels, chunk_size=chunk_size)
    want = ref_sequence_logps(hidden, head, labels)
    assert got.shape == (B,) and got[2].item() == 0.0
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    got_grads = torch.autograd.grad((got * weights).sum(), params)
    want_grads = torch.autograd.grad((want * weights).sum(), params)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 5, 1024])
def test_next_token_loss_matches_cross_entropy(chunk_size):
    hidden, head, labels = _batch(seed=1)
    params = [hidden, head.weight, head.bias]
    got = next_token_loss(hidden, head, labels, chunk_size=chunk_size)
    logits = head(hidden)
    want = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    for g, w in zip(torch.autograd.grad(got, params), torch.autograd.grad(want, params)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_next_token_loss_num_items_in_batch():
    hidden, head, labels = _batch(seed=2)
    mean = next_token_loss(hidden, head, labels, chunk_size=3)
    summed = next_token_loss(hidden, head, labels, chunk_size=3, num_items_in_batch=1)
    torch.testing.assert_close(summed, mean * _n_valid(labels), rtol=1e-12, atol=0)
    torch.testing.assert_close(summed, -sequence_logps(hidden, head, labels).sum(), rtol=1e-12, atol=0)


def test_sequence_token_counts():
    labels = torch.tensor([[1, 2, -100, 3], [-100, -100, -100, -100], [4, -100, 5, 6]])
    assert sequence_token_counts(labels).tolist() == [2, 0, 2]


def test_arbitrary_callable_head_with_softcap_and_frozen_weights():
    hidden, head, labels = _batch(seed=3)
    head.requires_grad_(False)

    def softcapped(h):
        return 3.0 * torch.tanh(head(h) / 3.0)

    got = sequence_logps(hidden, softcapped, labels, chunk_size=2)
    logp = torch.log_softmax(softcapped(hidden), dim=-1)[:, :-1]
    targets = labels[:, 1:]
    want = (logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0] * (targets != -100)).sum(1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        torch.autograd.grad(got.sum(), hidden)[0], torch.autograd.grad(want.sum(), hidden)[0], rtol=1e-10, atol=1e-12
    )


def test_no_grad_and_low_precision():
    hidden, head, labels = _batch(seed=4)
    with torch.no_grad():
        ref = sequence_logps(hidden, head, labels, chunk_size=4)
    assert not ref.requires_grad
    torch.testing.assert_close(ref, ref_sequence_logps(hidden, head, labels).detach(), rtol=1e-12, atol=1e-12)
    out = sequence_logps(hidden.detach().bfloat16(), head.bfloat16(), labels, chunk_size=4)
    assert out.dtype == torch.float32  # log-softmax in fp32 even for bf16 logits


def test_head_calls_and_empty_labels_keep_graph():
    hidden, head, labels = _batch(seed=5)
    calls = []
    head.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    sequence_logps(hidden, head, labels, chunk_size=4).sum().backward()
    m = _n_valid(labels)
    n_chunks = math.ceil(m / 4)
    expected = [4] * (n_chunks - 1) + [m - 4 * (n_chunks - 1)]
    assert calls[:n_chunks] == expected  # forward: only valid rows, in chunks
    assert sorted(calls[n_chunks:]) == sorted(expected)  # backward: each chunk recomputed once

    head.zero_grad()
    hidden.grad = None
    loss = next_token_loss(hidden, head, torch.full((B, T), -100))
    assert loss.item() == 0.0
    loss.backward()  # the head still ran (on 0 rows) so DDP/ZeRO see its parameters used
    assert torch.count_nonzero(head.weight.grad) == 0 and hidden.grad.shape == hidden.shape


def test_bad_shapes_raise():
    hidden, head, labels = _batch()
    with pytest.raises(ValueError, match="labels"):
        sequence_logps(hidden, head, labels[:, :-1])
    with pytest.raises(ValueError, match="chunk_size"):
        sequence_logps(hidden, head, labels, chunk_size=0)


class _LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor produced by any op (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


def _peak_live_bytes(fn):
    """Peak of (allocated - freed) CPU bytes while ``fn`` runs, from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def test_memory_bounded_at_real_vocab():
    vocab, hidden_size, batch, length, chunk = 151_936, 16, 2, 128, 16
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(hidden_size, vocab, bias=False)
    hidden = torch.randn(batch, length, hidden_size, generator=g, requires_grad=True)
    labels = torch.randint(0, vocab, (batch, length), generator=g)
    full_logits = batch * length * vocab

    with _LargestTensor() as mode:
        sequence_logps(hidden, head, labels, chunk_size=chunk).sum().backward()
    # Largest tensors: the head weight / its grad (16 x V) and one chunk's logits (16 x V).
    assert mode.max_numel == chunk * vocab
    assert 16 * mode.max_numel <= full_logits

    def step():
        sequence_logps(hidden, head, labels, chunk_size=chunk).sum().backward()

    # Alive at once: weight grad + a few chunk-sized buffers; full logits alone would be 16x one chunk.
    peak = _peak_live_bytes(step)
    assert peak < 8 * chunk * vocab * 4, peak / 2**20
    assert peak < full_logits * 4 / 2


def test_dpo_loss_matches_formula():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(5, generator=g, dtype=torch.float64) * 20 for _ in range(4))
    pc.requires_grad_()
    beta = 0.3
    got = dpo_loss(pc, pr, rc, rr, beta=beta)
    want = sum(
        math.log1p(math.exp(-beta * ((pc[i].item() - rc[i].item()) - (pr[i].item() - rr[i].item())))) for i in range(5)
    ) / 5
    assert math.isclose(got.item(), want, rel_tol=1e-12)
    # d/d pc_i = -beta * sigmoid(-beta * margin_i) / n
    margin = (pc - rc) - (pr - rr)
    (grad,) = torch.autograd.grad(got, pc)
    torch.testing.assert_close(grad, -beta * torch.sigmoid(-beta * margin.detach()) / 5, rtol=1e-12, atol=0)
    assert dpo_loss(*(torch.zeros(0) for _ in range(4))).item() == 0.0
