"""Peak memory of a preference step: tunevl's reference (the trained model with LoRA off, no second copy) vs the
same step with an explicitly loaded reference copy, as trainers without adapters do.

Both run one DPO (or S-VCO) optimizer step (policy forward + backward, reference forward, AdamW on LoRA) on the
same Qwen2-VL-shaped model saved with ``save_pretrained``, each in a fresh process; the figure is the peak
resident memory during the step (CPU: ``VmHWM``, reset once the models are loaded; GPU:
``torch.cuda.max_memory_allocated``) above what the process held before loading any model. Run::

    OMP_NUM_THREADS=1 python scripts/benchmarks/preference_memory.py [--hidden 2048 --layers 12 --objective dpo]

The target: tunevl holds at most 0.55x the copy's weights memory (the weights once, not twice); the peaks are
printed too, with the step's floor (no reference pass at all), since activations come on top of both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def build_model(path: Path, hidden: int, layers: int) -> int:
    """A Qwen2-VL with a ``hidden`` x ``layers`` language model and the tiny twin's tokenizer and processor; returns its parameter count."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from tunevl.models.tiny_lvlm import build_tiny_qwen2_vl

    _, processor = build_tiny_qwen2_vl()
    tiny = build_tiny_qwen2_vl()[0].config
    text = {k: v for k, v in tiny.text_config.to_dict().items() if k not in ("layer_types", "max_window_layers")}
    heads = hidden // 64
    text.update(hidden_size=hidden, intermediate_size=int(hidden * 2.75), num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=max(1, heads // 4), rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                          "mrope_section": [8, 12, 12]})
    vision = tiny.vision_config.to_dict()
    vision.update(hidden_size=hidden)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=tiny.image_token_id,
                           video_token_id=tiny.video_token_id, vision_start_token_id=tiny.vision_start_token_id,
                           vision_end_token_id=tiny.vision_end_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def _status(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak(device: str) -> int:
    """Start measuring: forget the peak so far (imports peak higher than they settle); returns the baseline."""
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap (a loader's temporary copies) back to the system
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS (Linux)
    return _status("VmRSS")


def _peak_bytes(device: str) -> int:
    import torch

    return torch.cuda.max_memory_allocated() if device == "cuda" else _status("VmHWM")


def step(path: str, mode: str, objective_name: str, pairs: int, device: str) -> dict:
    """One optimizer step in this process; ``mode`` is ``tunevl`` (LoRA off as reference) or ``copy``."""
    import torch

    from tunevl.adapters.lora import apply_lora
    from tunevl.data.synthetic_contrast import SyntheticContrast
    from tunevl.models import ModelConfig, load_view
    from tunevl.objectives.preference import DPO, SVCO

    records = [SyntheticContrast(pairs, image_size=32)[i] for i in range(pairs)]
    objective = {"dpo": DPO, "svco": SVCO}[objective_name]()
    torch.set_num_threads(1)
    before = _reset_peak(device)
    config = ModelConfig(name_or_path=path, dtype="float32")
    view = load_view(config)
    view.model.to(device)
    apply_lora(view, {"r": 16, "lora_alpha": 32, "target_modules": "language-all-linear"})
    weights = sum(p.numel() * p.element_size() for p in view.model.parameters())
    if mode == "none":  # no reference pass at all (as with precomputed log-probs): the step's own floor
        objective.reference_table = torch.zeros(pairs, len(objective.reference_columns))
    if mode == "copy":  # an explicitly loaded frozen reference, as without adapters
        reference = load_view(config)
        reference.model.to(device).eval()
        weights += sum(p.numel() * p.element_size() for p in reference.model.parameters())
        objective.reference_logps = lambda _view, batch: type(objective).reference_logps(objective, reference, batch)
    optimizer = torch.optim.AdamW([p for p in view.model.parameters() if p.requires_grad], lr=1e-5)
    _reset_peak(device)  # the step's peak: loading transients (a loader's own copies) are not the step's
    part = objective.collate(view, [{**r, "index": i} for i, r in enumerate(records)])
    part = {k: ({kk: vv.to(device) for kk, vv in v.items()} if isinstance(v, dict) else v) for k, v in part.items()}
    loss = objective(view, part)[objective.name]
    loss.backward()
    optimizer.step()
    return {"mode": mode, "peak_rise": _peak_bytes(device) - before, "weights": weights, "loss": loss.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--objective", choices=["dpo", "svco"], default="dpo")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(step(args.child[0], args.child[1], args.objective, args.pairs, args.device)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        n = build_model(Path(tmp), args.hidden, args.layers)
        results = {}
        for mode in ("none", "tunevl", "copy"):
            cmd = [sys.executable, __file__, "--child", tmp, mode, "--objective", args.objective, "--pairs", str(args.pairs),
                   "--device", args.device]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    mib = 2**20
    w = results["tunevl"]["weights"] / mib
    held = results["tunevl"]["weights"] / results["copy"]["weights"]
    ours, copy, none = (results[m]["peak_rise"] / mib for m in ("tunevl", "copy", "none"))
    print(f"{args.objective}, {args.pairs} pairs, Qwen2-VL-shaped LM hidden {args.hidden} x {args.layers} layers "
          f"({n / 1e6:.0f} M parameters, {w:.0f} MiB of weights), {args.device}")
    print(f"peak memory rise  no reference pass (floor):      {none:8.0f} MiB")
    print(f"                  tunevl (LoRA off as reference): {ours:8.0f} MiB")
    print(f"                  explicit reference copy:        {copy:8.0f} MiB")
    print(f"weights held, tunevl / copy: {held:.2f} (target <= 0.55)")
    print(f"peak, tunevl / copy: {ours / copy:.2f}; saved {(copy - ours) / w:.2f}x the weights; "
          f"the reference pass itself adds {ours - none:.0f} MiB to the step (activations and allocator slack set the floor)")
    print(f"losses (same model, same reference values): {results['tunevl']['loss']:.6f} vs {results['copy']['loss']:.6f}")


if __name__ == "__main__":
    main()
