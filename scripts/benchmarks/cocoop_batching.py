"""CoCoOp's text side: one forward of all B x C image-conditioned prompts vs the reference's loop over images.

CoCoOp shifts the context of every class prompt by a function of each image, so a micro-batch of B images
needs B x C prompts through the text tower (OBJECTIVES.md section 4). The reference implementation runs one
text forward per image, each over C prompts padded to 77 positions. tunevl runs all B x C prompts in one
forward, padded to the longest class prompt. Timed here, forward + backward into the prompt learner, on the
same model and prompts, the same numbers in all three variants:

* ``per-image, 77``: the reference's loop;
* ``per-image, longest``: the loop with tunevl's padding (isolates the padding's share);
* ``batched, longest``: tunevl's path.

Run::

    OMP_NUM_THREADS=1 python scripts/benchmarks/cocoop_batching.py [--images 8 --classes 37 --repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8, help="B, images per micro-batch")
    parser.add_argument("--classes", type=int, default=37, help="C, classes (Oxford Pets has 37)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="tiny-clip")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    from tunevl.adapters.coop import ClassPrompts, tokenize_class_prompts
    from tunevl.adapters.prompts import apply_prompt_adapters
    from tunevl.data.synthetic import COLOURS, NUMBER_WORDS, SHAPES
    from tunevl.models import ModelConfig, load_view

    view = load_view(ModelConfig(args.model))
    apply_prompt_adapters(view, {"cocoop": {"init_text": "a photo of a"}})
    view.model.to(args.device)
    prompts = view.text_prompts
    names = [f"{n} {c} {s}" for n in NUMBER_WORDS[1:] for c in COLOURS for s in SHAPES][: args.classes]
    prompts.bind_classnames(names)
    longest = prompts.class_prompts(names)
    tok = view.processor.tokenizer
    full = lambda texts: tok(texts, padding="max_length", max_length=77, return_tensors="pt")  # noqa: E731
    ids, mask, slots = tokenize_class_prompts(full, tok, names, prompts.num_tokens, prompts.position)
    padded77 = ClassPrompts(names, ids, mask, slots, torch.zeros(len(names), dtype=torch.long))
    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(args.images, view.image_embed_dim, device=args.device), dim=-1)

    def per_image(cp):
        return torch.stack([prompts.encode(view, cp, images[b : b + 1])[0] for b in range(images.shape[0])])

    def batched(cp):
        return prompts.encode(view, cp, images)

    variants = {"per-image, 77": (per_image, padded77), "per-image, longest": (per_image, longest),
                "batched, longest": (batched, longest)}
    reference = None
    times = {}
    for name, (fn, cp) in variants.items():
        samples = []
        for r in range(args.repeats + 1):
            prompts.zero_grad()
            start = time.perf_counter()
            feats = fn(cp)
            feats.sum().backward()
            if args.device != "cpu":
                torch.cuda.synchronize()
            if r:  # the first run warms up
                samples.append(time.perf_counter() - start)
        reference = feats.detach() if reference is None else reference
        torch.testing.assert_close(feats.detach(), reference, rtol=0, atol=1e-5)  # the same numbers
        times[name] = sorted(samples)[len(samples) // 2]
    print(f"{args.model}: B={args.images} images x C={args.classes} classes = {args.images * args.classes} prompts; "
          f"longest prompt {longest.input_ids.shape[1]} tokens; forward + backward, median of {args.repeats}")
    for name, seconds in times.items():
        print(f"  {name:<20} {1000 * seconds:8.1f} ms   {times['per-image, 77'] / seconds:5.2f}x")


if __name__ == "__main__":
    main()
