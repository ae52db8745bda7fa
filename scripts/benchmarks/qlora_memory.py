"""Peak memory of one QLoRA training step (4-bit NF4 language model, double quantisation) against the same LoRA
step on the base in bf16, through tunevl's view (same model, data, LoRA r=16 on every language-model linear
layer, gradient checkpointing, AdamW).

The model is a randomly initialised Qwen2.5-VL of a chosen size (default: a 24-layer, 1024-wide language model,
about 0.4 B parameters), saved once in bf16; each mode runs in a fresh subprocess. On CPU the figures are the
anonymous resident memory above the process's after imports (``RssAnon``, sampled every 2 ms, freed heap
returned to the OS first; bf16 weights are copied out of the memory-mapped checkpoint, so both modes hold their
weights in process memory as on a GPU): once the model is loaded, and at the peak of the training steps; on
CUDA, ``torch.cuda.memory_allocated`` / ``max_memory_allocated``. The bytes the weights hold (parameters and
buffers) are printed too. Run::

    OMP_NUM_THREADS=1 python scripts/benchmarks/qlora_memory.py [--layers 24 --hidden 1024 --device cuda]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NF4 = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_use_double_quant": True}


def _save_model(args, path: Path) -> int:
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from tunevl.models.tiny.qwen2_5_vl import build_tiny_qwen2_5_vl

    _, processor = build_tiny_qwen2_5_vl()  # the tiny twin's processor and tokenizer; the model is large
    tok = processor.tokenizer
    heads = args.hidden // 64
    half = 32  # head_dim 64: the mrope sections sum to 32
    config = Qwen2_5_VLConfig(
        vision_config=dict(depth=2, hidden_size=128, intermediate_size=256, num_heads=2, patch_size=8, spatial_merge_size=2,
                           temporal_patch_size=2, out_hidden_size=args.hidden, window_size=32, fullatt_block_indexes=[1]),
        text_config=dict(hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                         num_attention_heads=heads, num_key_value_heads=max(heads // 4, 1), vocab_size=len(tok),
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
                         max_position_embeddings=4096, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                                        "mrope_section": [half // 4, 3 * half // 8, 3 * half // 8]}),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"), video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"), tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def _trim() -> None:
    """Return freed heap to the OS (glibc keeps it otherwise; quantising leaves freed fp32 temporaries behind)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _weights_mib(model) -> float:
    """Bytes of the model's parameters and buffers (each storage once): what the weights really hold."""
    storages = {}
    for t in [*model.parameters(), *model.buffers()]:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values()) / 2**20


def _rss_mib() -> float:
    """Anonymous resident memory (tensors, heap); file-backed pages of the memory-mapped checkpoint are left out."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1024


class _PeakRss:
    """The largest resident set size seen while the context runs (torch releases the GIL in its kernels)."""

    def __enter__(self):
        import threading

        self.peak, self._stop = _rss_mib(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def _step(mode: str, path: str, args) -> dict:
    import torch

    from tunevl.adapters.lora import apply_lora
    from tunevl.data.synthetic import render_shapes
    from tunevl.models import ModelConfig, load_view

    cuda = args.device == "cuda"
    base = _rss_mib()  # after imports
    view = load_view(ModelConfig(name_or_path=path, family="qwen2_5_vl", quantization=NF4 if mode == "qlora" else None),
                     torch_dtype=torch.bfloat16)
    view.model.to(args.device)
    if not cuda:  # weights in process memory, as on a GPU, not pages of the memory-mapped checkpoint file
        for module in view.model.modules():
            for name, p in list(module.named_parameters(recurse=False)):
                if p.data.dtype != torch.uint8:
                    p.data = p.data.clone()
    apply_lora(view, {"r": 16, "lora_alpha": 32, "target_modules": "language-all-linear"})
    trainable = [p for p in view.model.parameters() if p.requires_grad]
    for p in trainable:
        p.data = p.data.float()
    view.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    view.model.train()
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    words = " ".join(["three red circles on a white picture"] * (args.tokens // 7))
    record = {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]},
                           {"role": "assistant", "content": words}], "images": [render_shapes(3, "red", "circle", image_size=64, seed=0)]}
    batch = {k: v.to(args.device) for k, v in view.collate([record], {"messages"}).items()}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    _trim()
    weights = _weights_mib(view.model)
    loaded = torch.cuda.memory_allocated() / 2**20 if cuda else _rss_mib() - base
    start = time.perf_counter()
    with _PeakRss() as rss:
        for _ in range(args.steps):
            loss = -view.sequence_logps(batch).sum() / (batch["labels"] != -100).sum()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    seconds = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss.peak - base
    return {"mode": mode, "weights_mib": round(weights, 1), "loaded_mib": round(loaded, 1), "peak_mib": round(peak, 1), "seconds_per_step": round(seconds, 2),
            "tokens": int(batch["input_ids"].shape[1]), "quantized": view.quantized}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=256, help="answer length (the sequence adds the prompt and image)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--_mode"), parser.add_argument("--_path")
    args = parser.parse_args()
    if args._mode:
        print(json.dumps(_step(args._mode, args._path, args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        n = _save_model(args, Path(tmp))
        flags = ["--layers", str(args.layers), "--hidden", str(args.hidden), "--tokens", str(args.tokens),
                 "--steps", str(args.steps), "--device", args.device]
        results = {}
        for mode in ("lora-bf16", "qlora"):
            proc = subprocess.run([sys.executable, __file__, *flags, "--_mode", mode, "--_path", tmp],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    lora, qlora = results["lora-bf16"], results["qlora"]
    where = "GPU memory allocated" if args.device == "cuda" else "CPU anonymous resident memory above imports"
    print(f"Qwen2.5-VL-shaped model, {n / 1e6:.0f} M parameters ({args.layers} layers x {args.hidden}), "
          f"{lora['tokens']} tokens, LoRA r=16 on every language-model linear layer, {args.device}")
    print(f"  (weights held; {where}: model loaded / peak of a training step)")
    for name, r in (("LoRA on the bf16 base ", lora), ("QLoRA (NF4, double q.)", qlora)):
        print(f"  {name}: {r['weights_mib']:8.1f} MiB; {r['loaded_mib']:8.1f} MiB / {r['peak_mib']:8.1f} MiB  "
              f"{r['seconds_per_step']:6.2f} s/step")
    print(f"  ratio QLoRA / LoRA    : {qlora['weights_mib'] / lora['weights_mib']:.2f} weights, "
          f"{qlora['peak_mib'] / lora['peak_mib']:.2f} at the step peak")


if __name__ == "__main__":
    main()
