"""``tunevl recipes``: list the shipped recipes with their descriptions."""

from __future__ import annotations


def add_parser(p) -> None:
    p.add_argument("--paths", action="store_true", help="print the full path of each recipe")


def run(args) -> int:
    from tunevl.config import RECIPES_DIR, load_recipe, shipped_recipes

    for name in shipped_recipes():
        recipe = load_recipe(name)
        where = str(RECIPES_DIR / f"{name}.yaml") if args.paths else ""
        description = str(recipe.tree.get("description", "")).strip().splitlines()
        print(f"{name:32s} {description[0] if description else ''} {where}".rstrip())
    return 0
