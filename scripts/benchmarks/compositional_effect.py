"""The effect of the counting loss and of NegCLIP's hard negatives, each against plain contrastive training.

The same tiny base (the shipped ``tiny-clip``) is trained twice per experiment through the shipped
recipes' objectives, with the same seed, steps, LoRA and data order; only the objective differs:

* **counting**: ``contrastive`` vs ``contrastive`` + ``counting`` on synthetic shapes
  (``"four green triangles"``); measured by CountBench's protocol on held-out images
  (``synthetic_counting``: the caption's number against every other of two..six).
* **binding**: ``contrastive`` vs ``negclip`` (word-swap hard captions made on the fly, and the
  colour-swapped scene as hard-negative image) on two-object scenes
  (``"a red circle and a blue square"``); measured on held-out scenes against the caption with the
  colours swapped (``synthetic_binding``; chance is 50).

Usage::

    OMP_NUM_THREADS=1 python scripts/benchmarks/compositional_effect.py            # both experiments
    python scripts/benchmarks/compositional_effect.py --only counting --steps 300
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import tunevl  # noqa: E402
from tunevl.train.loop import run  # noqa: E402

COMMON = {
    "model.name_or_path": "tiny-clip", "model.train_logit_scale": "true", "train.per_device_train_batch_size": 16,
    "train.warmup_ratio": 0.05, "train.save_steps": 0, "train.eval_at_start": "true", "train.progress_bar": "false",
    "train.logging_steps": 10, "train.report_to": "none",
}
_SHAPES = "colours: [red, green, blue, yellow, purple, white, orange, cyan], shapes: [circle, square, triangle, diamond, star]"


@dataclass(frozen=True)
class Experiment:
    baseline: str  # objectives of the plain run
    method: str  # objectives of the method's run
    data: str  # data.train
    benchmark: str  # the eval.benchmarks node
    metric: str  # its metric
    steps: int  # default optimizer steps
    overrides: tuple = ()  # further recipe overrides shared by both runs


EXPERIMENTS = {
    # Eight colours x five shapes at batch 16: a caption's in-batch negatives rarely differ in the count alone.
    "counting": Experiment(
        "[{_component_: contrastive}]",
        "[{_component_: contrastive}, {_component_: counting, weight: 1.0, numbers: [2, 3, 4, 5, 6]}]",
        f"{{_component_: synthetic_shapes, split: train, num_samples: 16384, max_count: 6, {_SHAPES}}}",
        f"{{_component_: synthetic_counting, split: eval, num_samples: 300, max_count: 6, {_SHAPES}}}",
        "synthetic_counting/accuracy", 120, ("train.learning_rate=1e-3",),
    ),
    # Binding needs the vision tower to pair colours with shapes: LoRA on every linear layer, more steps.
    "binding": Experiment(
        "[{_component_: contrastive}]",
        "[{_component_: negclip, generate_negatives: true, negative_images: true}]",
        "{_component_: synthetic_binding, split: train, num_samples: 16384, negatives: false}",
        "{_component_: synthetic_binding, split: eval, num_samples: 200}",
        "synthetic_binding/accuracy", 300, ("train.learning_rate=2e-3", "adapters.lora.target_modules=all-linear"),
    ),
}


def train_once(exp: Experiment, objectives: str, out: Path, steps: int, seed: int) -> dict:
    """Train the quickstart recipe with these objectives and the experiment's data; return its metrics."""
    overrides = [f"{k}={v}" for k, v in {**COMMON, "train.max_steps": steps, "train.seed": seed,
                                         "train.output_dir": str(out)}.items()]
    overrides += [*exp.overrides, f"objectives={objectives}", f"data.train={exp.data}", "~data.eval",
                  f"eval.benchmarks=[{exp.benchmark}]"]
    recipe = tunevl.load_recipe("quickstart", overrides)
    recipe.validate()
    metrics, _ = run(recipe)
    return metrics


def compare(name: str, steps: int | None = None, seed: int = 0, out_dir: Path | None = None) -> dict:
    """``{"plain": {"base", "trained"}, "method": {...}, "steps", "seconds"}`` for one experiment."""
    exp = EXPERIMENTS[name]
    steps = steps or exp.steps
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix=f"effect-{name}-"))
    started = time.time()
    result: dict = {"steps": steps}
    for label, objectives in (("plain", exp.baseline), ("method", exp.method)):
        metrics = train_once(exp, objectives, out_dir / label, steps, seed)
        result[label] = {"base": metrics["base"][exp.metric], "trained": metrics["trained"][exp.metric]}
    result["seconds"] = round(time.time() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=list(EXPERIMENTS), help="run one experiment")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default: 120 counting, 300 binding)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    labels = {"counting": ("contrastive", "+ counting loss", "held-out counting accuracy (2..6), %"),
              "binding": ("contrastive", "NegCLIP hard negatives", "held-out binding accuracy (swap), %")}
    for name in [args.only] if args.only else list(EXPERIMENTS):
        r = compare(name, args.steps, args.seed)
        plain, method, metric = labels[name]
        print(f"\n{name}: {metric}; {r['steps']} steps per run, seed {args.seed}, {r['seconds']} s for both")
        print(f"  {'untrained':<24}{r['plain']['base']:6.1f}")
        print(f"  {plain:<24}{r['plain']['trained']:6.1f}")
        print(f"  {method:<24}{r['method']['trained']:6.1f}   ({r['method']['trained'] - r['plain']['trained']:+.1f})")


if __name__ == "__main__":
    main()
