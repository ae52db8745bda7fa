"""The shipped quickstart, as a new user runs it, beats the untrained model on held-out data."""

from __future__ import annotations

import pytest

import tunevl
from tunevl.train.loop import run

pytestmark = pytest.mark.slow


def test_quickstart_beats_untrained(tmp_path):
    recipe = tunevl.load_recipe("quickstart", [f"train.output_dir={tmp_path / 'quickstart'}", "train.progress_bar=false"])
    recipe.validate()
    metrics, _ = run(recipe)
    base, trained = metrics["base"], metrics["trained"]
    for direction in ("i2t", "t2i"):
        gain = trained[f"{direction}_R@1"] - base[f"{direction}_R@1"]
        assert gain >= 10.0, f"{direction} R@1 {base[f'{direction}_R@1']:.1f} -> {trained[f'{direction}_R@1']:.1f}"
    history = [h["loss"] for h in recipe_history(tmp_path / "quickstart")]
    assert history[-1] < history[0]


def recipe_history(out):
    import json

    return json.loads((out / "metrics.json").read_text())["history"]
