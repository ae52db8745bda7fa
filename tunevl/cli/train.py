"""``tunevl train RECIPE [key=value ...]``"""

from __future__ import annotations

import argparse
import os

OVERRIDE_HELP = (
    "overrides as dotted keys with list indices, e.g. train.max_steps=100 objectives.0.weight=2; "
    "'~key' deletes a key"
)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", help="a recipe file, or the name of a shipped recipe (see 'tunevl recipes')")
    p.usage = "%(prog)s [-h] recipe [KEY=VALUE ...]"
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help=OVERRIDE_HELP)
    # The `deepspeed` launcher appends --local_rank=N; the rank is read from the environment anyway.
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.epilog = (
        "Examples:\n  tunevl train recipes/quickstart.yaml\n"
        "  tunevl train quickstart train.max_steps=50 train.output_dir=runs/try\n"
        "  torchrun --nproc_per_node 2 -m tunevl train recipes/quickstart.yaml train.deepspeed=zero2"
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args) -> int:
    from tunevl.config import load_recipe
    from tunevl.train.loop import train
    from tunevl.train.report import print_summary

    recipe = load_recipe(args.recipe, args.overrides)
    recipe.validate(all_problems=True)
    metrics = train(recipe)
    if os.environ.get("RANK", "0") == "0":
        print_summary(metrics, recipe.train_config().output_dir)
    return 0
