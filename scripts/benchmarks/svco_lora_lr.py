"""Which learning rate LoRA needs for S-VCO, relative to full tuning: both swept on the same synthetic task.

The official S-VCO run fully tunes the language model and projector at lr 1e-6. tunevl's recipes use LoRA
instead; this script measures, on the tiny LLaVA twin and synthetic minimal-contrast pairs, the best learning
rate of each way of training the same modules (LoRA r=16 on every language-model linear layer plus the
projector, vs all of those weights, with an explicitly loaded frozen reference copy), same steps, data, seed
and optimizer (AdamW, constant rate), and prints held-out preference accuracy per rate. The ratio of the best
rates is what the recipes apply to the official 1e-6. Run::

    OMP_NUM_THREADS=1 python scripts/benchmarks/svco_lora_lr.py [--steps 60 --rates 1e-5,3e-5,...]
"""

from __future__ import annotations

import argparse
import time


def run(mode: str, lr: float, steps: int, batch: int, kinds: str, held_out: int, seed: int = 0) -> dict:
    import torch

    from tunevl.adapters.lora import apply_lora
    from tunevl.data.synthetic_contrast import SyntheticContrast
    from tunevl.eval.preference import preference_accuracy
    from tunevl.models import ModelConfig, load_view
    from tunevl.objectives.preference import SVCO

    torch.manual_seed(seed)
    view = load_view(ModelConfig("tiny-llava"))
    objective = SVCO(beta=0.1)
    if mode == "lora":
        apply_lora(view, {"r": 16, "lora_alpha": 32, "target_modules": ["language-all-linear", "projector"]})
    else:  # full tuning of the same modules, against a frozen copy
        for name, p in view.model.named_parameters():
            p.requires_grad_("language_model.layers" in name and name.endswith("proj.weight") or "multi_modal_projector" in name)
        reference = load_view(ModelConfig("tiny-llava"))
        objective.reference_logps = lambda _view, b: SVCO.reference_logps(objective, reference, b)
    params = [p for p in view.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    data = SyntheticContrast(steps * batch, kinds=kinds, seed=seed)
    for s in range(steps):
        loss = objective(view, objective.collate(view, [data[s * batch + i] for i in range(batch)]))["svco"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return preference_accuracy(view, SyntheticContrast(held_out, split="eval", kinds=kinds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--kinds", default="colour")
    parser.add_argument("--held-out", type=int, default=96)
    parser.add_argument("--rates", default="3e-5,1e-4,3e-4,1e-3,3e-3,1e-2")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    best = {}
    started = time.time()
    print(f"{'lr':>8}{'full':>8}{'lora':>8}   (held-out preference accuracy, {args.steps} steps x {args.batch} pairs, {args.kinds})")
    for lr in rates:
        row = {mode: run(mode, lr, args.steps, args.batch, args.kinds, args.held_out)["accuracy"] for mode in ("full", "lora")}
        print(f"{lr:>8.0e}{row['full']:>8.3f}{row['lora']:>8.3f}", flush=True)
        for mode, acc in row.items():
            if acc > best.get(mode, (0, None))[0]:
                best[mode] = (acc, lr)
    ratio = best["lora"][1] / best["full"][1]
    print(f"best: full {best['full'][1]:.0e} ({best['full'][0]:.3f}), LoRA {best['lora'][1]:.0e} ({best['lora'][0]:.3f}); "
          f"LoRA / full = {ratio:g}; applied to the official 1e-6: {ratio * 1e-6:.0e}  ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
