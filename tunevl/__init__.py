"""tunevl: parameter-efficient fine-tuning of vision-language models from one YAML recipe.

Public API::

    import tunevl
    recipe = tunevl.load_recipe("recipes/quickstart.yaml", ["train.max_steps=50"])
    tunevl.validate(recipe)
    metrics = tunevl.train(recipe)
    m = tunevl.load("runs/quickstart")          # or "user/repo" on the Hub
    m.embed_images(images), m.embed_texts(texts), m.classify(images, classnames)
"""

from __future__ import annotations

__version__ = "0.1.0"


def load(path_or_id, **kwargs):
    """Load a trained bundle for inference; see :func:`tunevl.inference.load`."""
    from tunevl.inference import load as _load

    return _load(path_or_id, **kwargs)


def load_recipe(recipe, overrides=()):
    """Read a recipe file or shipped recipe name, with ``key=value`` overrides."""
    from tunevl.config import load_recipe as _load_recipe

    return _load_recipe(recipe, overrides)


def validate(recipe) -> None:
    """Check a recipe (a :class:`tunevl.config.Recipe` or a path) offline; raises ``RecipeError``."""
    if not hasattr(recipe, "validate"):
        recipe = load_recipe(recipe)
    recipe.validate()


def train(recipe) -> dict:
    """Validate and train a recipe (a :class:`tunevl.config.Recipe` or a path); returns the metrics."""
    from tunevl.train.loop import train as _train

    if not hasattr(recipe, "validate"):
        recipe = load_recipe(recipe)
    recipe.validate()
    return _train(recipe)


def evaluate(path_or_id, dataset, eval_cfg=None) -> dict:
    """Retrieval and/or zero-shot metrics of a bundle on a dataset (or list) of records; see :func:`tunevl.eval.evaluate`."""
    from tunevl.eval import evaluate as _evaluate

    return _evaluate(load(path_or_id), dataset, eval_cfg)


__all__ = ["__version__", "evaluate", "load", "load_recipe", "train", "validate"]
