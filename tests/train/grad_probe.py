"""``tunevl train`` with the engines' ``step`` patched to save the first optimizer step's gradients.

Run as ``python grad_probe.py OUT_DIR RECIPE [overrides...]`` (under ``torch.distributed.run`` for
several processes). Writes ``OUT_DIR/grads_rank{r}.pt``: every trainable parameter's full gradient
(after DDP's averaging; DeepSpeed's through ``safe_get_full_grad``) just before the first update.
"""

from __future__ import annotations

import os
import sys

import torch


def trainable_grads(engine) -> dict[str, torch.Tensor]:
    from tunevl.train.engine import DeepSpeedEngine

    if isinstance(engine, DeepSpeedEngine):
        from deepspeed.utils import safe_get_full_grad

        params = dict(engine.engine.module.named_parameters())
        return {n: safe_get_full_grad(params[n]).detach().float().cpu().clone() for n in engine.trainable_names}
    return {n: p.grad.detach().float().cpu().clone() for n, p in engine.module.named_parameters() if p.requires_grad}


def patch(out_dir: str, rank: int) -> None:
    """Make every engine save its first step's gradients into ``out_dir`` (idempotent per process)."""
    from tunevl.train import engine as engines

    saved = []
    for cls in (engines.TorchEngine, engines.DeepSpeedEngine):
        original = cls.step

        def step(self, loss_sum, _original=original):
            if not saved:
                saved.append(True)
                torch.save(trainable_grads(self), os.path.join(out_dir, f"grads_rank{rank}.pt"))
            return _original(self, loss_sum)

        cls.step = step


if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    patch(out, int(os.environ.get("RANK", "0")))
    from tunevl.cli import main

    sys.exit(main(["train", *sys.argv[2:]]))
