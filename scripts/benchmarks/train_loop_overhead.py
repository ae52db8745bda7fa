"""Time per optimizer step of tunevl's training loop vs a plain transformers + peft loop doing the same work.

Both train LoRA (attention of both towers, r=8) on the same randomly initialised CLIP saved with
``save_pretrained``, with symmetric InfoNCE, AdamW, a cosine schedule and synthetic shapes rendered and
preprocessed on the fly, at the same batch size and number of steps. The ratio is what tunevl's loop
(pre-flight, engine, logging, progress bar, finiteness check) costs on top. Run::

    OMP_NUM_THREADS=1 python scripts/benchmarks/train_loop_overhead.py [--steps 60 --batch 32 --hidden 256]

Add ``--device cuda`` on a GPU machine: both paths then use bf16 autocast (tunevl also loads the frozen base
in bf16, as its ``model.dtype: auto`` does).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def build_model(path: Path, hidden: int, layers: int, image_size: int) -> None:
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    from tunevl.models.tiny import build_tiny_clip

    _, processor = build_tiny_clip()  # its tokenizer and a PIL image processor, resized below
    tower = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=4)
    tok = processor.tokenizer
    config = CLIPConfig(
        text_config=dict(tower, vocab_size=len(tok), max_position_embeddings=32, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(tower, image_size=image_size, patch_size=16),
        projection_dim=hidden,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    image_processor = processor.image_processor
    image_processor.size = {"shortest_edge": image_size}
    image_processor.crop_size = {"height": image_size, "width": image_size}
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)


def plain_loop(path: Path, steps: int, batch: int, lr: float, device: str) -> float:
    """A hand-written peft loop: seconds per step, timed like tunevl's (from the first step to the last)."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import AutoProcessor, CLIPModel, get_scheduler

    from tunevl.data.synthetic import SyntheticShapes

    torch.manual_seed(0)
    model = CLIPModel.from_pretrained(path).to(device)
    processor = AutoProcessor.from_pretrained(path)
    targets = r"(text|vision)_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    sched = get_scheduler("cosine", opt, num_warmup_steps=0, num_training_steps=steps)
    data = SyntheticShapes(num_samples=steps * batch, split="train", image_size=64)
    order = torch.randperm(len(data))
    start = time.perf_counter()
    for step in range(steps):
        records = [data[int(i)] for i in order[step * batch:(step + 1) * batch]]
        pixels = processor.image_processor([r["image"] for r in records], return_tensors="pt")["pixel_values"]
        tok = processor.tokenizer([r["text"] for r in records], padding=True, truncation=True, return_tensors="pt")
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            img = F.normalize(model.get_image_features(pixel_values=pixels.to(device)).pooler_output.float(), dim=-1)
            txt = F.normalize(model.get_text_features(**{k: v.to(device) for k, v in tok.items()}).pooler_output.float(), dim=-1)
        logits = model.base_model.model.logit_scale.exp() * img @ txt.T
        labels = torch.arange(len(records), device=device)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    return (time.perf_counter() - start) / steps


def tunevl_loop(path: Path, out: Path, steps: int, batch: int, lr: float) -> float:
    """tunevl's loop on the quickstart recipe pointed at the same checkpoint: seconds per step."""
    import tunevl
    from tunevl.train.loop import run

    recipe = tunevl.load_recipe("quickstart", [
        f"model.name_or_path={path}", "model.train_logit_scale=false", f"train.output_dir={out}",
        f"train.max_steps={steps}", f"train.per_device_train_batch_size={batch}", f"train.learning_rate={lr}",
        "train.warmup_ratio=0", "train.save_steps=0", "train.progress_bar=false", "train.logging_steps=10",
        f"data.train.num_samples={steps * batch}", "~data.eval",
    ])
    recipe.validate()
    metrics, _ = run(recipe)
    return metrics["train"]["seconds_this_run"] / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip"
        build_model(path, args.hidden, args.layers, args.image_size)
        plain = plain_loop(path, args.steps, args.batch, args.lr, args.device)
        ours = tunevl_loop(path, Path(tmp) / "run", args.steps, args.batch, args.lr)
    print(f"model: CLIP hidden {args.hidden}, {args.layers} layers/tower, {args.image_size}px; batch {args.batch}, "
          f"{args.steps} steps, device {args.device}")
    print(f"plain transformers + peft loop: {plain * 1000:8.1f} ms/step")
    print(f"tunevl loop:                    {ours * 1000:8.1f} ms/step")
    print(f"ratio tunevl / plain:           {ours / plain:8.2f}")


if __name__ == "__main__":
    main()
