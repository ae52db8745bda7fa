"""Records, data sources and synthetic sets.

A record is a dict with optional fields (``image``, ``text``, ``count``, ``label``, ``index``...);
see DESIGN.md "Records". Recipes name sources by the short names in :data:`DATASETS`:
the synthetic sets and the file readers of :mod:`tunevl.data.sources` (``jsonl``, ``csv``,
``parquet``, ``load_from_disk``, ``imagefolder``, ``coco_captions``, ``karpathy``,
``coop_split``; ``preference`` for TRL and MVC preference pairs), ``few_shot`` (k records per class of
another source, or half of its classes) and ``length_split``, which routes one caption column by token count
(VladVA). :func:`tunevl.data.preflight.preflight` checks a dataset before training.
"""

from tunevl.data.fewshot import FewShot
from tunevl.data.length_split import LengthSplit
from tunevl.data.preference import PreferenceSource
from tunevl.data.sources import SOURCES, RECORD_FIELDS
from tunevl.data.synthetic import SyntheticShapes
from tunevl.data.synthetic_binding import SyntheticBinding
from tunevl.data.synthetic_captions import SyntheticCaptions
from tunevl.data.synthetic_contrast import SyntheticContrast
from tunevl.data.synthetic_vqa import SyntheticVQA

DATASETS = {
    "synthetic_shapes": SyntheticShapes,
    "synthetic_captions": SyntheticCaptions,
    "synthetic_vqa": SyntheticVQA,
    "synthetic_contrast": SyntheticContrast,
    "preference": PreferenceSource,
    "synthetic_binding": SyntheticBinding,
    **SOURCES,
    "few_shot": FewShot,
    "length_split": LengthSplit,
}

__all__ = ["DATASETS", "RECORD_FIELDS", "SyntheticBinding", "SyntheticShapes"]
