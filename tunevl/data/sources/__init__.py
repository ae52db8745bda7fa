"""Data sources: readers of files and folders into records, each a recipe component.

::

    data:
      train: {_component_: jsonl, path: data/train.jsonl, columns: {text: caption, image: file}}
      eval:  {_component_: karpathy, path: dataset_coco.json, split: test, image_root: /data/coco}
"""

import json
import os

from tunevl.data.sources.base import IMAGE_FIELDS, RECORD_FIELDS, Source
from tunevl.data.sources.captions import CocoCaptions, KarpathySplit
from tunevl.data.sources.folder import CoopSplit, ImageFolder
from tunevl.data.sources.pope import PopeSource
from tunevl.data.sources.negclip import NegClipTsv
from tunevl.data.sources.tabular import CsvSource, JsonlSource, ParquetSource, SavedDataset

#: Recipe names of the file-backed sources.
SOURCES = {
    "jsonl": JsonlSource,
    "csv": CsvSource,
    "parquet": ParquetSource,
    "load_from_disk": SavedDataset,
    "imagefolder": ImageFolder,
    "coco_captions": CocoCaptions,
    "karpathy": KarpathySplit,
    "coop_split": CoopSplit,
    "pope": PopeSource,
    "negclip_tsv": NegClipTsv,
}



def detect_source(path: str) -> str:
    """The name in :data:`SOURCES` that reads ``path``, judged from its ending or its content.

    Folders: a ``save_to_disk`` folder, a folder of parquet files, or an image folder.
    ``.json`` files: COCO captions (``annotations``), Karpathy (``images``), CoOp splits
    (``train``/``val``/``test``), or a list of records (``jsonl``).
    """
    from tunevl.errors import DataError

    full = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(full):
        names = os.listdir(full)
        if {"dataset_info.json", "state.json", "dataset_dict.json"} & set(names):
            return "load_from_disk"
        if any(n.endswith(".parquet") for n in names):
            return "parquet"
        return "imagefolder"
    if not os.path.isfile(full):
        raise DataError(f"no such file or folder: {full}", arg="path")
    ending = full.lower().rsplit(".", 1)[-1]
    if ending == "tsv" and _is_negclip(full):
        return "negclip_tsv"
    if ending in ("jsonl", "csv", "tsv", "parquet"):
        return {"tsv": "csv"}.get(ending, ending)
    if ending == "json":
        from tunevl.data.sources.base import read_text

        try:
            data = json.loads(read_text(full))
        except ValueError as err:
            if isinstance(err, DataError):
                raise
            raise DataError(f"{full}: invalid JSON: {err}") from None
        if isinstance(data, list):
            return "jsonl"
        if isinstance(data, dict) and "annotations" in data:
            return "coco_captions"
        if isinstance(data, dict) and "images" in data:
            return "karpathy"
        if isinstance(data, dict) and any(k in data for k in ("train", "val", "test")):
            return "coop_split"
    raise DataError(f"cannot tell which reader fits {full}; name one, e.g. jsonl:{path} "
                    f"(readers: {', '.join(SOURCES)})", arg="path")


def _is_negclip(path: str) -> bool:
    """A TSV whose header names NegCLIP's columns."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    return {"title", "filepath", "neg_caption", "neg_image"} <= set(header)


__all__ = [
    "IMAGE_FIELDS", "RECORD_FIELDS", "SOURCES", "CocoCaptions", "CoopSplit", "CsvSource", "ImageFolder",
    "JsonlSource", "KarpathySplit", "NegClipTsv", "ParquetSource", "PopeSource", "SavedDataset", "Source", "detect_source",
]
