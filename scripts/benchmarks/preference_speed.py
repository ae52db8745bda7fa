"""Time per preference step with reference log-probs precomputed (``precompute_ref_log_probs``) vs the reference
forward run at every step (the model with LoRA off).

Both train the same LoRA with the same objective (S-VCO or DPO) on the same synthetic minimal-contrast pairs
in one process, alternating timed steps so machine noise hits both alike; the one-off cost of precomputing
the table is printed too. The model is Qwen2-VL-shaped (see ``preference_memory.py``). Run::

    OMP_NUM_THREADS=1 python scripts/benchmarks/preference_speed.py [--hidden 512 --layers 4 --objective svco]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--objective", choices=["dpo", "svco"], default="svco")
    parser.add_argument("--pairs", type=int, default=4, help="pairs per step")
    parser.add_argument("--steps", type=int, default=8, help="timed steps of each kind")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from preference_memory import build_model
    from tunevl.adapters.lora import apply_lora
    from tunevl.data.synthetic_contrast import SyntheticContrast
    from tunevl.models import ModelConfig, load_view
    from tunevl.objectives.preference import DPO, SVCO
    from tunevl.objectives.reference import compute_reference_logps

    torch.set_num_threads(1)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        build_model(Path(tmp), args.hidden, args.layers)
        view = load_view(ModelConfig(name_or_path=tmp, dtype="float32"))
    view.model.to(device)
    apply_lora(view, {"r": 16, "lora_alpha": 32, "target_modules": "language-all-linear"})
    optimizer = torch.optim.AdamW([p for p in view.model.parameters() if p.requires_grad], lr=1e-5)
    n = args.pairs * (args.steps + 2)
    data = SyntheticContrast(n, image_size=32)
    cls = {"dpo": DPO, "svco": SVCO}[args.objective]
    on_the_fly, precomputed = cls(), cls(precompute_ref_log_probs=True)

    started = time.perf_counter()
    precomputed.reference_table = compute_reference_logps(precomputed, view, data, batch_size=args.pairs, device=device)
    precompute_s = time.perf_counter() - started

    def step(objective, k: int) -> float:
        records = [data[k * args.pairs + i] for i in range(args.pairs)]
        part = objective.collate(view, records)  # data loading is outside the timed region (workers do it)
        part = {key: ({kk: vv.to(device) for kk, vv in v.items()} if isinstance(v, dict) else
                      v.to(device) if torch.is_tensor(v) else v) for key, v in part.items()}
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        objective(view, part)[objective.name].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    step(on_the_fly, 0), step(precomputed, 1)  # warm-up
    times = {"on the fly": [], "precomputed": []}
    for k in range(2, args.steps + 2):
        times["on the fly"].append(step(on_the_fly, k))
        times["precomputed"].append(step(precomputed, k))
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    print(f"{args.objective}, {args.pairs} pairs a step, LoRA r16 on a Qwen2-VL-shaped LM hidden {args.hidden} x {args.layers}, "
          f"{args.device}, median of {args.steps} steps")
    print(f"reference on the fly:  {ms['on the fly']:8.1f} ms/step")
    print(f"reference precomputed: {ms['precomputed']:8.1f} ms/step   ratio {ms['precomputed'] / ms['on the fly']:.2f}")
    print(f"precomputing {n} pairs once: {precompute_s:.1f} s ({1000 * precompute_s / n * args.pairs:.1f} ms per {args.pairs} pairs)")


if __name__ == "__main__":
    main()
