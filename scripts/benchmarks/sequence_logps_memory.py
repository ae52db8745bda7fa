"""Peak memory and time of the next-token loss: chunked ``next_token_loss`` vs the naive ``model(...).logits`` path.

Both paths run forward + backward of the same randomly initialised Qwen2-VL-shaped model at Qwen2-VL's
real vocabulary (151,936) on CPU, each in a fresh subprocess so peak RSS is comparable. Run::

    OMP_NUM_THREADS=1 python scripts/benchmarks/sequence_logps_memory.py [--batch 4 --seq 512 --hidden 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _build(args):
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    half = args.hidden // 4 // 2  # head_dim / 2 with 4 heads: the mrope sections must sum to it
    sections = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    config = Qwen2VLConfig(
        vision_config=dict(depth=1, embed_dim=32, hidden_size=args.hidden, num_heads=2, patch_size=14),
        text_config=dict(hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=args.vocab,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                          "mrope_section": sections}),
        tie_word_embeddings=False,
    )
    model = Qwen2VLForConditionalGeneration(config).train()
    model.requires_grad_(False)
    model.model.language_model.layers[0].self_attn.q_proj.weight.requires_grad_(True)  # something to train
    ids = torch.randint(0, args.vocab, (args.batch, args.seq))
    labels = ids.clone()
    labels[:, : args.seq // 4] = -100  # a prompt
    return model, ids, labels


def _run(mode: str, args) -> dict:
    import torch
    import torch.nn.functional as F

    from tunevl.losses import next_token_loss

    model, ids, labels = _build(args)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if mode == "naive":
        logits = model(input_ids=ids, use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
    else:
        hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
        loss = next_token_loss(hidden, model.lm_head, labels, chunk_size=args.chunk_size)
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"mode": mode, "loss": float(loss), "seconds": round(seconds, 3), "peak_extra_mib": round((peak - base) / 1024, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--mode", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        print(json.dumps(_run(args.mode, args)))
        return
    results = {}
    for mode in ("naive", "chunked"):
        cmd = [sys.executable, __file__, "--mode", mode, *sys.argv[1:]]
        results[mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    n, c = results["naive"], results["chunked"]
    print(f"batch {args.batch} x seq {args.seq}, hidden {args.hidden}, vocab {args.vocab}, chunk {args.chunk_size}")
    for r in (n, c):
        print(f"  {r['mode']:>8}: peak +{r['peak_extra_mib']:8.1f} MiB  {r['seconds']:7.3f} s  loss {r['loss']:.6f}")
    print(f"  memory ratio naive/chunked: {n['peak_extra_mib'] / max(c['peak_extra_mib'], 1e-9):.1f}x; "
          f"time ratio chunked/naive: {c['seconds'] / n['seconds']:.2f}x; |loss diff| {abs(n['loss'] - c['loss']):.2e}")


if __name__ == "__main__":
    main()
