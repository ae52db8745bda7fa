"""Image-grounded preference accuracy on held-out synthetic minimal-contrast pairs: the untrained model, the same
recipe trained with next-token loss only, and S-VCO, with the same steps, data and seed.

Runs the shipped ``lvlm/svco_llava`` recipe on its tiny twin (LoRA on the language model and the projector),
trains it twice (its S-VCO objective; ``next_token`` on each pair's chosen conversation instead) and scores
both responses under both images of every held-out pair. Run::

    OMP_NUM_THREADS=1 python scripts/benchmarks/svco_effect.py [--steps 60 --kinds colour --lr 3e-3]

``tests/lvlm/test_lvlm_preference_effect.py`` runs :func:`compare` with the defaults and asserts the margins;
``--sweep 1e-4,3e-4,1e-3,3e-3`` prints S-VCO's accuracy per learning rate instead.
"""

from __future__ import annotations

import argparse
import tempfile
import time


def train(out: str, *, steps: int, lr: float, kinds: str, batch: int, seed: int, objectives: str | None = None,
          model: str = "tiny-llava"):
    """Train ``lvlm/svco_llava`` (or it with other ``objectives``) on synthetic pairs; returns the trained view."""
    import tunevl
    from tunevl.train.loop import run

    overrides = {
        "model.name_or_path": model, "train.output_dir": out, "train.max_steps": steps, "train.seed": seed,
        "train.per_device_train_batch_size": batch, "train.gradient_accumulation_steps": 1, "train.learning_rate": lr,
        "train.gradient_checkpointing": "false", "train.progress_bar": "false", "train.save_steps": 0,
    }
    items = [f"data.train={{_component_: synthetic_contrast, split: train, num_samples: {steps * batch}, kinds: {kinds}}}",
             "~data.eval", *(f"{k}={v}" for k, v in overrides.items())]
    if objectives:
        items.append(f"objectives={objectives}")
    recipe = tunevl.load_recipe("lvlm/svco_llava", items)
    recipe.validate()
    return run(recipe)[1].view, recipe


def compare(*, steps: int = 60, lr: float = 3e-3, kinds: str = "colour", batch: int = 8, seed: int = 0,
            held_out: int = 96) -> dict[str, dict]:
    """``{"untrained", "next_token", "svco"}`` -> preference-accuracy metrics on ``held_out`` eval pairs."""
    from tunevl.data.synthetic_contrast import SyntheticContrast
    from tunevl.eval.preference import preference_accuracy
    from tunevl.models import load_view

    pairs = SyntheticContrast(held_out, split="eval", kinds=kinds)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.time()
        svco, recipe = train(f"{tmp}/svco", steps=steps, lr=lr, kinds=kinds, batch=batch, seed=seed)
        nt, _ = train(f"{tmp}/nt", steps=steps, lr=lr, kinds=kinds, batch=batch, seed=seed,
                      objectives="[{_component_: next_token}]")
        out["untrained"] = preference_accuracy(load_view(recipe.model_config()), pairs)
        out["next_token"] = preference_accuracy(nt, pairs)
        out["svco"] = preference_accuracy(svco, pairs)
        out["seconds"] = round(time.time() - started, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--kinds", default="colour", help="+-joined: count, colour, position")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--held-out", type=int, default=96)
    parser.add_argument("--sweep", help="comma-separated learning rates: S-VCO accuracy per learning rate")
    args = parser.parse_args()
    if args.sweep:
        from tunevl.data.synthetic_contrast import SyntheticContrast
        from tunevl.eval.preference import preference_accuracy

        pairs = SyntheticContrast(args.held_out, split="eval", kinds=args.kinds)
        for lr in map(float, args.sweep.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                view, _ = train(tmp, steps=args.steps, lr=lr, kinds=args.kinds, batch=args.batch, seed=args.seed)
                m = preference_accuracy(view, pairs)
            print(f"lr {lr:.0e}: accuracy {m['accuracy']:.3f}  pairs {m['accuracy/pairs']:.3f}")
        return
    result = compare(steps=args.steps, lr=args.lr, kinds=args.kinds, batch=args.batch, seed=args.seed, held_out=args.held_out)
    print(f"{args.steps} steps x {args.batch} pairs, lr {args.lr}, kinds {args.kinds}, {result.pop('seconds')} s")
    print(f"{'model':<12}{'accuracy':>10}{'pairs':>8}  per kind")
    for name, m in result.items():
        kinds = "  ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in m.items() if k.startswith("accuracy/") and k != "accuracy/pairs")
        print(f"{name:<12}{m['accuracy']:>10.3f}{m['accuracy/pairs']:>8.3f}  {kinds}")
    print(f"svco / next_token accuracy ratio: {result['svco']['accuracy'] / result['next_token']['accuracy']:.2f}")


if __name__ == "__main__":
    main()
