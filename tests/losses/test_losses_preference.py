"""svco_loss against a direct fp64 reference (values, gradients, betas switched off), and dpo_loss against trl's
own DPO loss code on the same log-probs."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from tunevl.losses import dpo_loss, svco_loss
from tunevl.losses.preference import SVCO_KEYS

B = 5


def _logps(seed: int, requires_grad: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(B, generator=g, dtype=torch.float64) * 15).requires_grad_(requires_grad) for k in SVCO_KEYS}


def _reference_terms(p, r, betas) -> list[list[float]]:
    """The four terms per pair, written out with math.log1p/exp (OBJECTIVES.md §2)."""
    def ll(k, i):
        return p[k][i].item() - r[k][i].item()

    def nls(x):  # -log sigmoid(x)
        return math.log1p(math.exp(-x)) if x > -30 else -x

    rows = []
    for i in range(B):
        margins = [ll("chosen_with_chosen_image", i) - ll("chosen_without_image", i),
                   ll("chosen_without_image", i) - ll("chosen_with_rejected_image", i),
                   ll("rejected_with_rejected_image", i) - ll("rejected_without_image", i),
                   ll("rejected_without_image", i) - ll("rejected_with_chosen_image", i)]
        rows.append([nls(b * m) if b > 0 else 0.0 for b, m in zip(betas, margins)])
    return rows


@pytest.mark.parametrize("beta", [0.1, 0.7, [0.1, 0.2, 0.3, 0.4]])
def test_svco_loss_matches_the_written_out_formula(beta):
    policy, reference = _logps(0, True), _logps(1, False)
    betas = [beta] * 4 if isinstance(beta, float) else beta
    got = svco_loss(policy, reference, beta=beta)
    want = sum(map(sum, _reference_terms(policy, reference, betas))) / B
    assert got.dtype == torch.float64 and math.isclose(got.item(), want, rel_tol=1e-12)

    # Gradients: d/d l(y_w|I_w) = -b1 sig(-b1 m1) / B; l(y_w|0) is in terms 1 and 2 with opposite signs.
    grads = torch.autograd.grad(got, [policy[k] for k in SVCO_KEYS])
    g = dict(zip(SVCO_KEYS, grads))
    r = {k: (policy[k] - reference[k]).detach() for k in SVCO_KEYS}
    m1 = r["chosen_with_chosen_image"] - r["chosen_without_image"]
    m2 = r["chosen_without_image"] - r["chosen_with_rejected_image"]
    s1, s2 = torch.sigmoid(-betas[0] * m1), torch.sigmoid(-betas[1] * m2)
    torch.testing.assert_close(g["chosen_with_chosen_image"], -betas[0] * s1 / B, rtol=1e-12, atol=0)
    torch.testing.assert_close(g["chosen_without_image"], (betas[0] * s1 - betas[1] * s2) / B, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(g["chosen_with_rejected_image"], betas[1] * s2 / B, rtol=1e-12, atol=0)


@pytest.mark.parametrize("off", range(4))
def test_a_zero_beta_removes_exactly_its_term(off):
    policy, reference = _logps(2, True), _logps(3, False)
    betas = [0.1, 0.2, 0.3, 0.4]
    full = _reference_terms(policy, reference, betas)
    betas[off] = 0.0
    got = svco_loss(policy, reference, beta=betas)
    want = sum(sum(row) - row[off] for row in full) / B
    assert math.isclose(got.item(), want, rel_tol=1e-12)
    # The log-prob that only the switched-off term reads gets exactly no gradient from it.
    only_in = {0: "chosen_with_chosen_image", 1: "chosen_with_rejected_image",
               2: "rejected_with_rejected_image", 3: "rejected_with_chosen_image"}[off]
    (grad,) = torch.autograd.grad(got, policy[only_in])
    assert torch.equal(grad, torch.zeros(B, dtype=torch.float64))


def test_svco_loss_edge_cases():
    empty = {k: torch.zeros(0, requires_grad=True) for k in SVCO_KEYS}
    loss = svco_loss(empty, empty)
    assert loss.item() == 0.0 and loss.requires_grad  # graph-connected zero
    # Policy == reference: every margin is 0, each term log 2.
    same = _logps(4, False)
    assert math.isclose(svco_loss(same, same).item(), 4 * math.log(2), rel_tol=1e-12)
    assert svco_loss({k: v.float() for k, v in same.items()}, same).dtype == torch.float64
    with pytest.raises(ValueError, match="four"):
        svco_loss(same, same, beta=[0.1, 0.1])
    with pytest.raises(ValueError, match=">= 0"):
        svco_loss(same, same, beta=-0.1)
    with pytest.raises(KeyError, match="chosen_without_image"):
        svco_loss({k: v for k, v in same.items() if k != "chosen_without_image"}, same)


def _trl_dpo_loss(pc, pr, rc, rr, beta):
    """trl 1.x ``DPOTrainer._compute_loss`` (sigmoid, reverse KL) on given sequence log-probs.

    The trainer's own method runs on a stand-in ``self`` and a model whose per-token log-probs put each
    sequence's log-prob on its one completion token; reference log-probs come in as precomputed.
    """
    from trl.trainer.dpo_trainer import DPOTrainer

    n = pc.shape[0]
    logps = torch.cat([pc, pr])  # batch is [chosen; rejected]
    per_token = torch.stack([torch.zeros_like(logps), logps], dim=1)  # [2n, T-1] with T = 3
    per_token = torch.cat([per_token, torch.zeros_like(per_token[:, :1])], dim=1)
    zeros = torch.zeros(2 * n, 3, dtype=logps.dtype)
    outputs = SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())
    accel = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda t: t, gather=lambda t: t)
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=accel, aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=["sigmoid"], loss_weights=[1.0],
        beta=beta, label_smoothing=0.0, use_weighting=False, _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0, _tp_size=1,
    )
    completion_mask = torch.tensor([[0, 0, 1, 0]] * (2 * n))  # the token at position 2: per-token column 1
    inputs = {"input_ids": torch.zeros(2 * n, 4, dtype=torch.long), "attention_mask": torch.ones(2 * n, 4, dtype=torch.long),
              "completion_mask": completion_mask, "ref_chosen_logps": rc, "ref_rejected_logps": rr}
    return DPOTrainer._compute_loss(trainer, lambda **kw: outputs, inputs, False)


def test_dpo_loss_equals_trl_on_the_same_logps():
    pytest.importorskip("trl")
    g = torch.Generator().manual_seed(5)
    pc, pr, rc, rr = (torch.randn(6, generator=g, dtype=torch.float64) * 20 for _ in range(4))
    for beta in (0.1, 0.5):
        a = pc.clone().requires_grad_()
        b = pc.clone().requires_grad_()
        ours, theirs = dpo_loss(a, pr, rc, rr, beta=beta), _trl_dpo_loss(b, pr, rc, rr, beta)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)
        torch.testing.assert_close(torch.autograd.grad(ours, a)[0], torch.autograd.grad(theirs, b)[0], rtol=1e-12, atol=0)
