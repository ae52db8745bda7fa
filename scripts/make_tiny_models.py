"""Regenerate ``tunevl/assets/tiny-clip/``: build, pretrain in full, save, write the manifest.

The shipped tiny CLIP is pretrained once on *generic* synthetic captions of rendered
shapes, so that the quickstart's LoRA fine-tuning starts from a model that already
knows colours and shapes, as a real base model would. The pretraining captions are
deliberately looser than the quickstart's ``"three red circles"``:

* exact number words only for counts 1–2 ("one", "a", "a single", "two", "a pair of");
  3–4 is "a few"/"some", 5 and more is "many"/"lots of" (the words three..ten never occur);
* the count, the colour or the shape is sometimes left out ("red circles",
  "a few circles", "some red shapes"), and a few templates wrap the phrase
  ("a picture of ...", "... on a dark background").

Images use all renderer colours and shapes with 1–8 objects, from the random stream
``split="pretrain"`` (disjoint from the quickstart's "train"/"eval" streams).

Loss: symmetric InfoNCE with every in-batch item of the same caption counted as a
positive (soft targets), since generic captions repeat often within a batch.

Usage::

    OMP_NUM_THREADS=1 python scripts/make_tiny_models.py            # ~5 min on one core
    python scripts/make_tiny_models.py --out /tmp/tiny-clip --steps 200
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tunevl.data.synthetic import COLOURS, SHAPES, SyntheticShapes, pluralise, render_shapes  # noqa: E402
from tunevl.models.tiny import TINY_CLIP_SPEC, build_tiny_clip, save_tiny_clip, write_manifest  # noqa: E402

PRETRAIN_MAX_COUNT = 8
_COUNT_PHRASES = {1: ("one", "a", "a single"), 2: ("two", "a pair of"), 3: ("a few", "some"), 5: ("many", "lots of")}
_WRAPPERS = ("{}", "{}", "{}", "a picture of {}", "an image of {}", "{} on a dark background")


def count_phrase(rng: random.Random, count: int) -> str:
    """Loose count phrase: exact for 1–2, "a few"/"some" for 3–4, "many"/"lots of" for 5+."""
    key = 1 if count == 1 else 2 if count == 2 else 3 if count <= 4 else 5
    return rng.choice(_COUNT_PHRASES[key])


def generic_caption(rng: random.Random, count: int, colour: str, shape: str) -> str:
    """A loose caption of ``count`` ``colour`` ``shape`` s; see the module docstring."""
    noun = shape if count == 1 else pluralise(shape)
    form = rng.random()
    if form < 0.45:
        phrase = f"{count_phrase(rng, count)} {colour} {noun}"
    elif form < 0.65:  # no count
        phrase = f"{colour} {noun}" if count > 1 else f"a {colour} {noun}"
    elif form < 0.80:  # no colour
        phrase = f"{count_phrase(rng, count)} {noun}"
    elif form < 0.90:  # no shape
        phrase = f"{count_phrase(rng, count)} {colour} {'shape' if count == 1 else 'shapes'}"
    else:
        phrase = f"{count_phrase(rng, count)} {noun} in {colour}"
    return rng.choice(_WRAPPERS).format(phrase)


def pretrain_batch(rng: random.Random, batch_size: int, image_size: int) -> tuple[list, list[str]]:
    """``batch_size`` random shape images (all colours/shapes, 1..8 objects) with generic captions."""
    images, texts = [], []
    colours = sorted(COLOURS)
    for _ in range(batch_size):
        count = rng.randint(1, PRETRAIN_MAX_COUNT)
        colour, shape = rng.choice(colours), rng.choice(SHAPES)
        images.append(render_shapes(count, colour, shape, image_size=image_size, seed=rng.getrandbits(63)))
        texts.append(generic_caption(rng, count, colour, shape))
    return images, texts


class FastPixels:
    """Tensor pixel pipeline equal to the CLIP image processor for images already at its size.

    The processor's resize and centre crop are no-ops at the native size, so only
    rescale and normalise remain; :meth:`check` asserts the equivalence.
    """

    def __init__(self, image_processor):
        self.proc = image_processor
        self.mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)

    def __call__(self, images) -> torch.Tensor:
        arr = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images]))
        x = arr.permute(0, 3, 1, 2).float() * self.proc.rescale_factor
        return (x - self.mean) / self.std

    def check(self, images) -> None:
        ref = self.proc(images=images, return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(self(images), ref, atol=1e-5, rtol=1e-5)


def multi_positive_info_nce(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, groups: torch.Tensor):
    """Symmetric InfoNCE where items with equal ``groups`` id are all positives (soft targets)."""
    logits = scale * img @ txt.t()
    same = (groups[:, None] == groups[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


@torch.no_grad()
def retrieval_r1(model, processor, dataset: SyntheticShapes, key=None) -> tuple[float, float]:
    """Text→image and image→text R@1 on ``dataset``; a hit is a retrieved item with the same caption.

    With ``key`` (a function of the caption), a hit is a retrieved item with the same key.
    """
    pix = FastPixels(processor.image_processor)
    recs = [dataset[i] for i in range(len(dataset))]
    caps = [r["text"] for r in recs]
    tok = processor.tokenizer(caps, padding=True, return_tensors="pt")
    img = F.normalize(model.get_image_features(pixel_values=pix([r["image"] for r in recs])).pooler_output, dim=-1)
    txt = F.normalize(model.get_text_features(**tok).pooler_output, dim=-1)
    sim = txt @ img.t()
    keys = [key(c) if key else c for c in caps]
    ids = {c: k for k, c in enumerate(sorted(set(keys)))}
    g = torch.tensor([ids[c] for c in keys])
    t2i = (g[sim.argmax(1)] == g).float().mean().item()
    i2t = (g[sim.argmax(0)] == g).float().mean().item()
    return t2i, i2t


def pretrain(model, processor, *, steps: int, batch_size: int, lr: float, seed: int, log_every: int = 100) -> None:
    """Train every parameter of ``model`` on generic captions (AdamW, warmup + cosine)."""
    rng = random.Random(f"tunevl.pretrain/{seed}")
    torch.manual_seed(seed)
    pix = FastPixels(processor.image_processor)
    pix.check(pretrain_batch(random.Random(0), 4, TINY_CLIP_SPEC["image_size"])[0])
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    eval_set = SyntheticShapes(num_samples=256, split="eval", seed=0)
    tok_cache: dict[str, list[int]] = {}
    model.train()
    t0 = time.time()
    for step in range(1, steps + 1):
        images, texts = pretrain_batch(rng, batch_size, TINY_CLIP_SPEC["image_size"])
        for t in texts:
            if t not in tok_cache:
                tok_cache[t] = processor.tokenizer(t)["input_ids"]
        tok = processor.tokenizer.pad({"input_ids": [tok_cache[t] for t in texts]}, return_tensors="pt")
        gid = {t: k for k, t in enumerate(dict.fromkeys(texts))}
        groups = torch.tensor([gid[t] for t in texts])
        out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=pix(images))
        scale = model.logit_scale.clamp(max=math.log(100)).exp()
        loss = multi_positive_info_nce(F.normalize(out.image_embeds, dim=-1), F.normalize(out.text_embeds, dim=-1),
                                       scale, groups)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            model.eval()
            t2i, i2t = retrieval_r1(model, processor, eval_set)
            cs_t2i, cs_i2t = retrieval_r1(model, processor, eval_set, key=lambda c: c.split(" ", 1)[1].rstrip("s"))
            model.train()
            print(f"step {step:5d}  loss {loss.item():.3f}  scale {scale.item():5.1f}  "
                  f"quickstart-eval R@1 t2i {t2i:.3f} i2t {i2t:.3f} (colour+shape only: {cs_t2i:.3f} {cs_i2t:.3f})"
                  f"  {time.time() - t0:6.1f}s", flush=True)
    with torch.no_grad():
        model.logit_scale.clamp_(max=math.log(100))
    model.eval()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "tunevl" / "assets" / "tiny-clip")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="results are reproducible for a fixed thread count")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, processor = build_tiny_clip(seed=args.seed)
    t0 = time.time()
    pretrain(model, processor, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    minutes = (time.time() - t0) / 60
    t2i, i2t = retrieval_r1(model, processor, SyntheticShapes(num_samples=256, split="eval", seed=0))

    if args.out.exists():
        shutil.rmtree(args.out)
    save_tiny_clip(args.out, model, processor)
    import tokenizers
    import transformers

    write_manifest(
        args.out,
        name="tiny-clip",
        description="Tiny CLIP (random init + full pretraining on generic synthetic shape captions); "
                    "a stand-in base model for offline tests and the quickstart, not a useful model.",
        made_by="scripts/make_tiny_models.py",
        command=" ".join(["python", "scripts/make_tiny_models.py", *(argv if argv is not None else sys.argv[1:])]),
        architecture={**TINY_CLIP_SPEC, "vocab_size": len(processor.tokenizer)},
        parameters=sum(p.numel() for p in model.parameters()),
        pretraining={
            "data": "render_shapes: all colours and shapes, 1-8 objects, split 'pretrain'; loose captions "
                    "(number words only for 1-2; 'a few'/'some' for 3-4; 'many'/'lots of' for 5+)",
            "loss": "symmetric InfoNCE, same-caption in-batch items as positives",
            "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
            "optimizer": "AdamW(betas=(0.9, 0.98), weight_decay=0.05), warmup 5% + cosine, grad clip 1.0",
            "threads": args.threads, "minutes": round(minutes, 2),
        },
        base_metrics_quickstart_eval={"split": "eval", "num_samples": 256, "text_to_image_r1": round(t2i, 4),
                                      "image_to_text_r1": round(i2t, 4)},
        versions={"torch": torch.__version__, "transformers": transformers.__version__,
                  "tokenizers": tokenizers.__version__},
    )
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) in {minutes:.1f} min; quickstart-eval R@1 t2i {t2i:.3f} i2t {i2t:.3f}")


if __name__ == "__main__":
    main()
