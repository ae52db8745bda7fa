"""Check that LoRA on the shipped tiny CLIP learns the quickstart task visibly, fast.

Mirrors what ``recipes/quickstart.yaml`` is meant to do, with plain transformers +
peft (no tunevl trainer): load the shipped base with ``from_pretrained``, add LoRA
(r 8, alpha 16) on q/k/v/out_proj of both towers with everything else frozen
(projections and logit scale included), train with symmetric InfoNCE on
``SyntheticShapes(split="train")``, and compare held-out retrieval R@1 on
``SyntheticShapes(split="eval")`` before and after.

R@1 with duplicate captions: the task has only counts × colours × shapes distinct
captions (72 by default), so a batch or eval set repeats captions. A retrieval
counts as correct when the retrieved item has the *same caption* as the query
(text→image: the top image's caption equals the query text; image→text: the top
text equals the image's caption).

Usage::

    OMP_NUM_THREADS=1 python scripts/benchmarks/quickstart_lora_check.py --steps 300 --lr 1e-3
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import CLIPModel, CLIPProcessor  # noqa: E402

from tunevl.data.synthetic import SyntheticShapes  # noqa: E402
from tunevl.models.tiny import resolve_builtin  # noqa: E402


@torch.no_grad()
def retrieval_r1(model, processor, dataset: SyntheticShapes) -> dict[str, float]:
    """Text→image / image→text R@1 (same-caption hits), plus image→caption-pool accuracy."""
    recs = [dataset[i] for i in range(len(dataset))]
    caps = [r["text"] for r in recs]
    batch = processor(text=caps, images=[r["image"] for r in recs], padding=True, return_tensors="pt")
    img = F.normalize(model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output, dim=-1)
    txt = F.normalize(model.get_text_features(input_ids=batch["input_ids"],
                                              attention_mask=batch["attention_mask"]).pooler_output, dim=-1)
    ids = {c: k for k, c in enumerate(dataset.classnames)}
    g = torch.tensor([ids[c] for c in caps])
    sim = txt @ img.t()
    pool = processor.tokenizer(dataset.classnames, padding=True, return_tensors="pt")
    pool_txt = F.normalize(model.get_text_features(**pool).pooler_output, dim=-1)
    return {
        "t2i_r1": (g[sim.argmax(1)] == g).float().mean().item(),
        "i2t_r1": (g[sim.argmax(0)] == g).float().mean().item(),
        "i2pool_acc": ((img @ pool_txt.t()).argmax(1) == g).float().mean().item(),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="tiny-clip")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup-ratio", type=float, default=0.05)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--alpha", type=int, default=16)
    ap.add_argument("--eval-samples", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)

    path = resolve_builtin(args.base)
    model = CLIPModel.from_pretrained(path).eval()
    processor = CLIPProcessor.from_pretrained(path)
    eval_set = SyntheticShapes(num_samples=args.eval_samples, split="eval", seed=args.seed)
    before = retrieval_r1(model, processor, eval_set)

    config = LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=0.0,
                        target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
    model = get_peft_model(model, config)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all("lora_" in n for n in trainable), trainable
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    scale = model.base_model.model.logit_scale.detach().exp()

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    warmup = max(1, int(args.warmup_ratio * args.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    train_set = SyntheticShapes(num_samples=args.steps * args.batch_size, split="train", seed=args.seed)
    labels = torch.arange(args.batch_size)
    model.train()
    t0 = time.time()
    for step in range(args.steps):
        recs = [train_set[step * args.batch_size + k] for k in range(args.batch_size)]
        batch = processor(text=[r["text"] for r in recs], images=[r["image"] for r in recs],
                          padding=True, return_tensors="pt")
        out = model(**batch)
        logits = scale * F.normalize(out.image_embeds, dim=-1) @ F.normalize(out.text_embeds, dim=-1).t()
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if args.eval_every and (step + 1) % args.eval_every == 0:
            model.eval()
            mid = retrieval_r1(model, processor, eval_set)
            model.train()
            print(f"step {step + 1}  loss {loss.item():.3f}  {mid}  {time.time() - t0:.1f}s", flush=True)
    train_s = time.time() - t0
    model.eval()
    after = retrieval_r1(model, processor, eval_set)
    result = {
        "base": args.base, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        "warmup_ratio": args.warmup_ratio, "schedule": "cosine", "r": args.r, "alpha": args.alpha,
        "trainable_params": n_train, "threads": torch.get_num_threads(), "train_seconds": round(train_s, 1),
        "final_loss": round(loss.item(), 4), "eval_samples": args.eval_samples,
        "before": {k: round(v, 4) for k, v in before.items()},
        "after": {k: round(v, 4) for k, v in after.items()},
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
