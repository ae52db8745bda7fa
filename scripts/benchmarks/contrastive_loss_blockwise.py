"""Contrastive loss alone at a large batch: blockwise ``info_nce`` / ``sigmoid_loss`` vs the direct path.

Forward + backward of each loss on random L2-normalised fp32 embeddings (N x D, logit scale and bias
trainable), first blockwise (``block_size=None``: the automatic choice), then direct (``block_size=0``),
in one process. Prints peak memory above the inputs, seconds, and the gradients' largest relative
difference, with the ratios blockwise / direct. Targets (issue 14): memory <= 0.05x, time <= 1.2x,
gradients within 1e-5 relative (fp32). On CPU, ``seconds`` is the process's CPU time per thread (a shared
machine's other processes do not inflate it; ``wall_seconds`` is printed too), on a GPU wall time.

Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU, and the process's peak resident size
(``VmHWM``, reset through ``/proc/self/clear_refs``, with glibc's mmap threshold fixed at 128 KiB so that
freed tensors leave the resident size) on CPU. On CPU the direct path at N = 32,768 holds
about ten 4 GiB matrices (~40 GiB); pass a smaller ``--n`` on smaller machines. Run::

    OMP_NUM_THREADS=1 python scripts/benchmarks/contrastive_loss_blockwise.py [--n 32768 --dim 768 --device cuda]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from tunevl.losses import info_nce, sigmoid_loss


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key)).split()[1])


class PeakMemory:
    """Bytes allocated at the peak of the ``with`` block above what was allocated when it began."""

    def __init__(self, device: torch.device):
        self.device, self.bytes = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # the peak resident size restarts from the current one
            self.base = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.bytes = _status_kib("VmHWM") * 1024 - self.base


def _inputs(n: int, dim: int, device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    img = F.normalize(torch.randn(n, dim, generator=g), dim=-1).to(device).requires_grad_()
    txt = F.normalize(torch.randn(n, dim, generator=g), dim=-1).to(device).requires_grad_()
    scale = torch.tensor([10.0], device=device, requires_grad=True)
    bias = torch.tensor([-10.0], device=device, requires_grad=True)
    return [img, txt, scale, bias]


def _run(fn, inputs, block_size, device) -> dict:
    for t in inputs:
        t.grad = None
    with PeakMemory(device) as peak:
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = fn(*inputs, block_size=block_size)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
    grads = [t.grad.detach().clone() for t in inputs]
    # On CPU the process's own CPU time (divided by the threads it may use) leaves out other processes' load.
    timed = cpu_seconds / torch.get_num_threads() if device.type == "cpu" else seconds
    return {"loss": loss.item(), "seconds": timed, "wall_seconds": seconds, "peak_bytes": peak.bytes, "grads": grads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=32768, help="batch size N (logits are N x N)")
    p.add_argument("--dim", type=int, default=768, help="embedding width D")
    p.add_argument("--loss", choices=["info_nce", "sigmoid_loss", "both"], default="both")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--block-size", type=int, default=None, help="rows per block (default: automatic)")
    p.add_argument("--skip-direct", action="store_true", help="blockwise only, where the direct path does not fit")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":  # freed tensors back to the system at once: the resident peak follows live tensors
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 131072)  # M_MMAP_THRESHOLD (fixed, no dynamic raise)
    fns = [info_nce, sigmoid_loss] if args.loss == "both" else [{"info_nce": info_nce, "sigmoid_loss": sigmoid_loss}[args.loss]]
    inputs = _inputs(args.n, args.dim, device)
    block = args.block_size if args.block_size is not None else None
    for fn in fns:
        warm = _inputs(256, args.dim, device, seed=1)  # kernels' first-call costs out of the timings
        _run(fn, warm, 64, device)
        _run(fn, warm, 0, device)
        blockwise = _run(fn, inputs, block, device)
        if args.skip_direct:
            print(json.dumps({"loss": fn.__name__, "n": args.n, "dim": args.dim, "device": str(device), "blockwise": {
                "seconds": round(blockwise["seconds"], 3), "wall_seconds": round(blockwise["wall_seconds"], 3),
                "peak_mib": round(blockwise["peak_bytes"] / 2**20, 1), "loss": blockwise["loss"]}}))
            continue
        direct = _run(fn, inputs, 0, device)
        pairs = list(zip(blockwise["grads"], direct["grads"]))
        errors = {name: float((b - d).abs().max() / d.abs().max().clamp(min=1e-30)) for name, (b, d) in zip(["image", "text", "scale"], pairs)}
        # info_nce's bias gradient is 0 up to rounding on both paths: its difference is absolute.
        errors["bias_abs"] = float((pairs[3][0] - pairs[3][1]).abs().max())
        result = {
            "loss": fn.__name__, "n": args.n, "dim": args.dim, "device": str(device),
            "block_rows": block if block is not None else "auto",
            "direct": {"seconds": round(direct["seconds"], 3), "wall_seconds": round(direct["wall_seconds"], 3),
                       "peak_mib": round(direct["peak_bytes"] / 2**20, 1), "loss": direct["loss"]},
            "blockwise": {"seconds": round(blockwise["seconds"], 3), "wall_seconds": round(blockwise["wall_seconds"], 3),
                          "peak_mib": round(blockwise["peak_bytes"] / 2**20, 1), "loss": blockwise["loss"]},
            "memory_ratio": round(blockwise["peak_bytes"] / max(direct["peak_bytes"], 1), 4),
            "time_ratio": round(blockwise["seconds"] / direct["seconds"], 3),
            "loss_rel_diff": abs(blockwise["loss"] - direct["loss"]) / abs(direct["loss"]),
            "grad_rel_diff": errors,  # relative to each tensor's largest entry
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()
