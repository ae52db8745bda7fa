"""``tunevl validate RECIPE [key=value ...]``: check every node against its callable, offline."""

from __future__ import annotations

from tunevl.cli.train import OVERRIDE_HELP


def add_parser(p) -> None:
    p.add_argument("recipe", nargs="?", help="a recipe file, or the name of a shipped recipe")
    p.usage = "%(prog)s [-h] recipe [KEY=VALUE ...]"
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help=OVERRIDE_HELP)


def run(args) -> int:
    from tunevl.config import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    recipe.validate(all_problems=True)
    print(f"{recipe.file}: ok")
    return 0
