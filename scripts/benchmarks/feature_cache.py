"""Speed of CoOp training with the frozen-tower feature cache vs recomputing the image features every step.

Both runs train the shipped ``clip/coop`` recipe (16 context tokens, SGD, no augmentation) through tunevl's loop
on the same few-shot image folder (PNG files written by ``tunevl data synth --kind classification``), at the same
batch size and number of epochs. With the cache the image tower runs once before the first step and training
batches carry no pixels (images are not even decoded); without it every step decodes, preprocesses and encodes
its images. Printed: the one-off cache fill, seconds per step of each run after it, and their ratio (the
epoch-2+ speed-up: from the second epoch on the cached run has paid for its fill many times over). Run::

    OMP_NUM_THREADS=1 python scripts/benchmarks/feature_cache.py [--epochs 20 --shots 16 --batch 16 --model tiny-clip]

Add ``--device cuda`` on a GPU machine (bf16 autocast there, as the recipe's ``bf16: null`` picks).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--model", default="tiny-clip", help="a CLIP checkpoint (default: the built-in tiny CLIP)")
    parser.add_argument("--image-size", type=int, default=64, help="side of the written PNG files")
    parser.add_argument("--workers", type=int, default=0, help="data-loader workers")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: what is available)")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""

    import tunevl
    from tunevl.cli.data import write_classification
    from tunevl.data.synthetic import SHAPES, SyntheticShapes
    from tunevl.train.loop import run

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "shapes"
        write_classification(data, SyntheticShapes(num_samples=40 * len(SHAPES), shapes=list(SHAPES), image_size=args.image_size))
        results = {}
        for cache in (True, False):
            recipe = tunevl.load_recipe("clip/coop", [
                f"model.name_or_path={args.model}", f"data.train.source={{_component_: imagefolder, path: {data / 'images'}}}",
                f"data.train.num_shots={args.shots}", "~data.eval", f"train.output_dir={Path(tmp) / str(cache)}",
                f"train.num_train_epochs={args.epochs}", f"train.per_device_train_batch_size={args.batch}",
                f"train.dataloader_num_workers={args.workers}", "train.progress_bar=false", "train.save_steps=0",
                "train.logging_steps=1000", "objectives.0.augment=none", f"objectives.0.feature_cache={str(cache).lower()}",
            ])
            recipe.validate()
            metrics, module = run(recipe)
            steps, seconds = metrics["train"]["steps"], metrics["train"]["seconds_this_run"]
            results[cache] = (steps, seconds, module.objectives[0].cache.fill_seconds)
        (steps, cached, fill), (_, plain, _) = results[True], results[False]
        per_epoch = steps // args.epochs
        print(f"{args.model}, {len(SHAPES)} classes x {args.shots} shots, batch {args.batch}: {steps} steps "
              f"({per_epoch} per epoch, {args.epochs} epochs)")
        print(f"feature cache fill (once, before the first step): {fill:.2f} s")
        print(f"recompute: {1000 * plain / steps:.1f} ms/step   cached: {1000 * cached / steps:.1f} ms/step")
        print(f"epoch-2+ speed-up (ms/step, recompute / cached): {plain / cached:.2f}x; "
              f"whole run incl. the fill: {plain / (cached + fill):.2f}x")


if __name__ == "__main__":
    main()
