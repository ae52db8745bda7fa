"""Recipes: YAML 1.2 files where each node is one callable and its keys are that callable's arguments."""

from __future__ import annotations

from pathlib import Path

from tunevl.config.errors import RecipeError
from tunevl.config.schema import Recipe

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped with tunevl (``quickstart``, ``clip/lora``, ...)."""
    return sorted(str(p.relative_to(RECIPES_DIR).with_suffix("")) for p in RECIPES_DIR.rglob("*.yaml"))


def load_recipe(recipe: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe file (or a shipped recipe by name) and apply ``key=value`` overrides."""
    path = Path(recipe)
    if not path.is_file():
        # `recipes/quickstart.yaml` as the README writes it, from any folder: the shipped recipe
        name = str(recipe).replace("\\", "/").removeprefix("./").removeprefix("recipes/").removesuffix(".yaml")
        shipped = RECIPES_DIR / f"{name}.yaml"
        if not shipped.is_file():
            raise RecipeError("no such recipe file, and no shipped recipe of that name (see 'tunevl recipes')", file=str(recipe))
        path = shipped
    return Recipe.from_file(path, overrides)


__all__ = ["RECIPES_DIR", "Recipe", "RecipeError", "load_recipe", "shipped_recipes"]
