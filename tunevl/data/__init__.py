"""Records, data sources and synthetic sets.

A record is a dict with optional fields (``image``, ``text``, ``count``, ``label``, ``index``...);
see DESIGN.md "Records". Recipes name sources by the short names in :data:`DATASETS`.
"""

from tunevl.data.synthetic import SyntheticShapes

DATASETS = {
    "synthetic_shapes": SyntheticShapes,
}

__all__ = ["DATASETS", "SyntheticShapes"]
