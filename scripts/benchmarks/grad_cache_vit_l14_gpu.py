"""GradCache at CLIP ViT-L/14 size on one GPU: an effective contrastive batch of 65,536 vs plain batch 256.

A randomly initialised CLIP at ViT-L/14's real size (vision 24 x 1024 at 224 px / patch 14, text 12 x 768
over 77 tokens, projection 768), frozen in bf16 with LoRA (r=8) on both towers' attention and the logit
scale trained, symmetric InfoNCE (blockwise above 2^24 logits), bf16 autocast. Both steps run in this
process through tunevl's own pieces (``TrainModule``, ``TorchEngine``, ``step_scales``,
``grad_cache.micro_step``, ``engine.step``) on synthetic inputs built directly as collated chunks (random
pixels and token ids ending in eos), so no data loading is timed. Prints seconds per step, images per
second and ``torch.cuda.max_memory_allocated`` above the state before the step, for plain batch
``--batch`` and GradCache batch ``--batch x --factor`` in chunks of ``--batch``, and their ratios.

Expected cost on an H100/H200: the GradCache step encodes 65,536 images twice (about 4 forward-equivalents
per image against 3 for the plain step); budget a few minutes per timed step, and the host needs the
micro-batch's bf16 pixels (~20 GB at 65,536). An 80 GB H100 may not fit plain batch 256: pass
``--batch 128 --factor 512``. Run::

    python scripts/benchmarks/grad_cache_vit_l14_gpu.py [--batch 256 --factor 256 --steps 1]

Smoke test on CPU at a toy size (checks the script, measures nothing meaningful)::

    python scripts/benchmarks/grad_cache_vit_l14_gpu.py --device cpu --vision-layers 1 --vision-hidden 64 \\
        --text-layers 1 --text-hidden 64 --projection 32 --image-size 28 --text-length 8 --batch 4 --factor 4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contrastive_loss_blockwise import PeakMemory  # noqa: E402


def build_model(path: Path, args) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    from tunevl.models.tiny import build_tiny_clip

    _, processor = build_tiny_clip()  # its tokenizer and PIL image processor (inputs are built directly here)
    tok = processor.tokenizer
    config = CLIPConfig(
        text_config=dict(hidden_size=args.text_hidden, intermediate_size=4 * args.text_hidden,
                         num_hidden_layers=args.text_layers, num_attention_heads=max(1, args.text_hidden // 64),
                         vocab_size=49408, max_position_embeddings=args.text_length, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=args.vision_hidden, intermediate_size=4 * args.vision_hidden,
                           num_hidden_layers=args.vision_layers, num_attention_heads=max(1, args.vision_hidden // 64),
                           image_size=args.image_size, patch_size=14),
        projection_dim=args.projection,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    image_processor = processor.image_processor
    image_processor.size = {"shortest_edge": args.image_size}
    image_processor.crop_size = {"height": args.image_size, "width": args.image_size}
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)


def make_chunks(n: int, sizes: list[int], args, eos: int, device: torch.device, seed: int) -> dict:
    """A collated micro-batch of ``n`` synthetic records in chunks of ``sizes``, on the host (bf16 pixels)."""
    g = torch.Generator(device=device).manual_seed(seed)
    chunks, start = [], 0
    for size in sizes:
        pixels = torch.randn(size, 3, args.image_size, args.image_size, generator=g, device=device, dtype=torch.bfloat16)
        ids = torch.randint(eos + 1, 49408, (size, args.text_length), generator=g, device=device)
        ids[:, -1] = eos  # CLIP pools at the first eos
        chunks.append({"index": torch.arange(start, start + size), "pixel_values": pixels.cpu(), "input_ids": ids.cpu(),
                       "attention_mask": torch.ones_like(ids).cpu(), "own": [{}]})
        start += size
    return {"index": torch.arange(n), "chunks": chunks}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256, help="plain batch = GradCache chunk size")
    p.add_argument("--factor", type=int, default=256, help="GradCache batch / plain batch (256 x 256 = 65,536)")
    p.add_argument("--steps", type=int, default=1, help="timed steps per mode (after one warm-up step)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--vision-layers", type=int, default=24)
    p.add_argument("--vision-hidden", type=int, default=1024)
    p.add_argument("--text-layers", type=int, default=12)
    p.add_argument("--text-hidden", type=int, default=768)
    p.add_argument("--projection", type=int, default=768)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--text-length", type=int, default=77)
    args = p.parse_args()

    import tunevl
    from tunevl.train import grad_cache
    from tunevl.train.distributed import DistInfo
    from tunevl.train.engine import TorchEngine, TrainModule
    from tunevl.train.loop import _to_device, build_view, step_scales

    device = torch.device(args.device)
    bf16 = device.type == "cuda"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        build_model(Path(tmp) / "clip", args)
        recipe = tunevl.load_recipe("quickstart", [f"model.name_or_path={tmp}/clip", f"train.output_dir={tmp}/run", "~data.eval"])
        torch.manual_seed(0)
        view = build_view(recipe, torch_dtype=torch.bfloat16 if bf16 else None)
        module = TrainModule(view, recipe.build_objectives())
        dist_info = DistInfo(device=device)
        engine = TorchEngine(module, recipe.train_config(), dist_info, 2 * (args.steps + 1), bf16)
        module.train()
        eos = view.processor.tokenizer.eos_token_id
        params = sum(p.numel() for p in module.parameters())
        for mode, n in (("plain", args.batch), ("grad_cache", args.batch * args.factor)):
            sizes = grad_cache.chunk_sizes(n, args.batch) if mode == "grad_cache" else [n]

            def train_step(batch):
                scales = step_scales(module, [batch], dist_info, 1)[0]
                if mode == "grad_cache":
                    loss = grad_cache.micro_step(engine, batch, scales, last=True)
                else:
                    loss = sum(engine.forward(_to_device(batch["chunks"][0], device), scales).values())
                    engine.backward(loss)
                return engine.step(loss.detach())[0]

            seconds, peaks = 0.0, []
            for s in range(args.steps + 1):  # step 0 warms up
                batch = make_chunks(n, sizes, args, eos, device, seed=s)  # built outside the timings
                with PeakMemory(device) as peak:
                    start = time.perf_counter()
                    loss = train_step(batch)  # engine.step syncs with the host
                    elapsed = time.perf_counter() - start
                del batch
                if s:
                    seconds += elapsed
                    peaks.append(peak.bytes)
            results[mode] = {"mode": mode, "batch": n, "chunks": len(sizes), "seconds_per_step": round(seconds / args.steps, 3),
                             "images_per_second": round(n * args.steps / seconds, 1),
                             "peak_mib": round(max(peaks) / 2**20, 1), "loss": round(loss, 4)}
            print(json.dumps(results[mode]), flush=True)
    plain, cached = results["plain"], results["grad_cache"]
    print(f"CLIP with {params / 1e6:.0f}M parameters, vision {args.vision_layers}x{args.vision_hidden} at {args.image_size}px, "
          f"text {args.text_layers}x{args.text_hidden} over {args.text_length} tokens; {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"contrastive batch {cached['batch']} vs {plain['batch']} ({args.factor}x)")
    print(f"peak memory ratio grad_cache / plain: {cached['peak_mib'] / max(plain['peak_mib'], 1e-9):.3f}")
    print(f"images/s ratio grad_cache / plain:    {cached['images_per_second'] / plain['images_per_second']:.3f}")


if __name__ == "__main__":
    main()
