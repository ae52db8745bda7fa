"""ARO (Yuksekgonul et al., ICLR 2023, https://arxiv.org/abs/2210.01936), from ``mertyg/vision-language-models-are-bows``.

* VG-Relation / VG-Attribution: ``visual_genome_{relation,attribution}.json`` with ``images/``; the image
  is cropped to the record's box; the options are ``[false_caption, true_caption]`` and the answer is 1.
  Macro accuracy as in the repository's notebook: per relation without the symmetric relations
  listed there, per attribute pair with at least 25 items.
* COCO-Order / Flickr30k-Order: the BLIP retrieval JSON (``coco_karpathy_test.json``, ``flickr30k_test.json``);
  one test per (image, caption): the caption and four shuffles of it, all through ``pre_caption``;
  the answer is 0 (Precision@1).
"""

from __future__ import annotations

import os
import random
import re
from typing import Any

import torch

from tunevl.data.tagging import tag, tokenize
from tunevl.errors import DataError
from tunevl.eval.benchmarks.base import Benchmark, check_images, existing_file, existing_folder, need, read_json
from tunevl.eval.compositional import ImageItem, embed_images, embed_texts, grouped_accuracy, option_correct

# Verbatim from the notebook "Replicate ARO! VG-Relation, VG-Attribution.ipynb" (commit 42dbb5e): relations
# whose swapped caption can be just as true, left out of the macro accuracy.
SYMMETRIC_RELATIONS = frozenset([
    'adjusting', 'attached to', 'between', 'bigger than', 'biting', 'boarding', 'brushing', 'chewing', 'cleaning',
    'climbing', 'close to', 'coming from', 'coming out of', 'contain', 'crossing', 'dragging', 'draped over',
    'drinking', 'drinking from', 'driving', 'driving down', 'driving on', 'eating from', 'eating in', 'enclosing',
    'exiting', 'facing', 'filled with', 'floating in', 'floating on', 'flying', 'flying above', 'flying in',
    'flying over', 'flying through', 'full of', 'going down', 'going into', 'going through', 'grazing in',
    'growing in', 'growing on', 'guiding', 'hanging from', 'hanging in', 'hanging off', 'hanging over',
    'higher than', 'holding onto', 'hugging', 'in between', 'jumping off', 'jumping on', 'jumping over', 'kept in',
    'larger than', 'leading', 'leaning over', 'leaving', 'licking', 'longer than', 'looking in', 'looking into',
    'looking out', 'looking over', 'looking through', 'lying next to', 'lying on top of', 'making', 'mixed with',
    'mounted on', 'moving', 'on the back of', 'on the edge of', 'on the front of', 'on the other side of', 'opening',
    'painted on', 'parked at', 'parked beside', 'parked by', 'parked in', 'parked in front of', 'parked near',
    'parked next to', 'perched on', 'petting', 'piled on', 'playing', 'playing in', 'playing on', 'playing with',
    'pouring', 'reaching for', 'reading', 'reflected on', 'riding on', 'running in', 'running on',
    'running through', 'seen through', 'sitting behind', 'sitting beside', 'sitting by', 'sitting in front of',
    'sitting near', 'sitting next to', 'sitting under', 'skiing down', 'skiing on', 'sleeping in', 'sleeping on',
    'smiling at', 'sniffing', 'splashing', 'sprinkled on', 'stacked on', 'standing against', 'standing around',
    'standing behind', 'standing beside', 'standing in front of', 'standing near', 'standing next to', 'staring at',
    'stuck in', 'surrounding', 'swimming in', 'swinging', 'talking to', 'topped with', 'touching', 'traveling down',
    'traveling on', 'tying', 'typing on', 'underneath', 'wading in', 'waiting for', 'walking across', 'walking by',
    'walking down', 'walking next to', 'walking through', 'working in', 'working on', 'worn on', 'wrapped around',
    'wrapped in', 'by', 'of', 'near', 'next to', 'with', 'beside', 'on the side of', 'around',
])
#: VG-Attribution: attribute pairs with fewer items are left out of the macro accuracy.
MIN_ATTRIBUTE_COUNT = 25


class _VisualGenome(Benchmark):
    """Shared reader of VG-Relation and VG-Attribution."""

    file_name: str
    group_key: str

    def __init__(self, path: str, image_root: str | None = None, name: str | None = None,
                 max_samples: int | None = None):
        super().__init__(name, max_samples)
        self.file = existing_file(path)
        root = existing_folder(image_root) if image_root is not None else os.path.join(os.path.dirname(self.file), "images")
        data = read_json(self.file)
        if not isinstance(data, list):
            raise DataError(f"{self.file}: expected a JSON array of test cases, got {type(data).__name__}")
        self.items = []
        for k, item in enumerate(self._cap(data)):
            where = f"{self.file}: item {k}"
            need(item, ("image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption",
                        self.group_key), where)
            box = tuple(float(item[f"bbox_{c}"]) for c in "xywh")
            self.items.append({"image": os.path.join(root, item["image_path"]), "box": box, "where": where,
                               "options": [item["false_caption"], item["true_caption"]], "group": self._group(item, where)})
        check_images([i["image"] for i in self.items], [i["where"] for i in self.items], self.file)

    def _group(self, item: dict, where: str) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.items)

    def correct(self, encoder, batch_size: int | None = None) -> torch.Tensor:
        """Per item, whether the true caption (option 1) wins; a tie picks option 0 (np.argmax), so it is wrong."""
        image = embed_images(encoder, [ImageItem(i["image"], i["box"]) for i in self.items], batch_size)
        texts = embed_texts(encoder, [o for i in self.items for o in i["options"]], batch_size).reshape(len(self.items), 2, -1)
        return option_correct(torch.einsum("nd,nkd->nk", image, texts), 1)


class AroRelation(_VisualGenome):
    """ARO VG-Relation (``visual_genome_relation.json``; images in ``images/`` beside it unless ``image_root``).

    Metrics: ``accuracy`` over all items; ``macro_accuracy``, the mean of the per-relation accuracies
    without the notebook's symmetric relations; ``num_items``, ``num_relations`` (in the macro mean).
    """

    key = "aro_vg_relation"
    group_key = "relation_name"

    def _group(self, item, where):
        return str(item["relation_name"])

    def evaluate(self, encoder, batch_size: int | None = None) -> dict[str, Any]:
        correct = self.correct(encoder, batch_size)
        groups = {g: acc for g, (acc, _) in grouped_accuracy(correct, [i["group"] for i in self.items]).items()
                  if g not in SYMMETRIC_RELATIONS}
        return {"accuracy": 100.0 * correct.float().mean().item(),
                "macro_accuracy": 100.0 * sum(groups.values()) / len(groups) if groups else 0.0,
                "num_items": len(self.items), "num_relations": len(groups)}


class AroAttribution(_VisualGenome):
    """ARO VG-Attribution (``visual_genome_attribution.json``; images in ``images/`` beside it unless ``image_root``).

    Metrics: ``accuracy`` over all items; ``macro_accuracy``, the mean over attribute pairs
    (``"<a0>_<a1>"``) with at least 25 items; ``num_items``, ``num_groups`` (in the macro mean).
    """

    key = "aro_vg_attribution"
    group_key = "attributes"

    def _group(self, item, where):
        attrs = item["attributes"]
        if not isinstance(attrs, list) or len(attrs) < 2:
            raise DataError(f"{where}: attributes: expected a list of two attributes, got {attrs!r}")
        return f"{attrs[0]}_{attrs[1]}"

    def evaluate(self, encoder, batch_size: int | None = None) -> dict[str, Any]:
        correct = self.correct(encoder, batch_size)
        groups = {g: acc for g, (acc, n) in grouped_accuracy(correct, [i["group"] for i in self.items]).items()
                  if n >= MIN_ATTRIBUTE_COUNT}
        return {"accuracy": 100.0 * correct.float().mean().item(),
                "macro_accuracy": 100.0 * sum(groups.values()) / len(groups) if groups else 0.0,
                "num_items": len(self.items), "num_groups": len(groups)}


# ---- COCO-Order / Flickr30k-Order ------------------------------------------------------------------

def pre_caption(caption: str, max_words: int = 30) -> str:
    """BLIP's caption normalisation (ARO's ``dataset_zoo/retrieval.py``): lower case, ``.!"()*#:;~`` to spaces,
    runs of spaces collapsed, stripped, cut to ``max_words`` words."""
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption).rstrip("\n").strip(" ")
    words = caption.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else caption


def _shuffle(rng: random.Random, words: list[str], idx: list[int]) -> list[str]:
    out = list(words)
    picked = [words[i] for i in idx]
    rng.shuffle(picked)
    for i, w in zip(idx, picked):
        out[i] = w
    return out


def shuffle_nouns_and_adjectives(caption: str, rng: random.Random) -> str:
    """Nouns permuted among themselves, adjectives among themselves; tokens joined by spaces."""
    tokens = tag(caption)
    words = [t.text for t in tokens]
    words = _shuffle(rng, words, [i for i, t in enumerate(tokens) if t.pos == "NOUN"])
    words = _shuffle(rng, words, [i for i, t in enumerate(tokens) if t.pos == "ADJ"])
    return " ".join(words)


def shuffle_all_but_nouns_and_adjectives(caption: str, rng: random.Random) -> str:
    """Every token that is neither a noun nor an adjective permuted; tokens joined by spaces."""
    tokens = tag(caption)
    return " ".join(_shuffle(rng, [t.text for t in tokens], [i for i, t in enumerate(tokens) if t.pos not in ("NOUN", "ADJ")]))


def _trigrams(words: list[str]) -> list[list[str]]:
    return [words[i:i + 3] for i in range(0, len(words), 3)]


def shuffle_within_trigrams(caption: str, rng: random.Random) -> str:
    """Consecutive 3-token groups, each shuffled inside."""
    groups = _trigrams([w for w, _, _ in tokenize(caption)])
    for g in groups:
        rng.shuffle(g)
    return " ".join(" ".join(g) for g in groups)


def shuffle_trigrams(caption: str, rng: random.Random) -> str:
    """The order of the consecutive 3-token groups shuffled."""
    groups = _trigrams([w for w, _, _ in tokenize(caption)])
    rng.shuffle(groups)
    return " ".join(" ".join(g) for g in groups)


PERTURBATIONS = (shuffle_nouns_and_adjectives, shuffle_all_but_nouns_and_adjectives, shuffle_within_trigrams,
                 shuffle_trigrams)


class _Order(Benchmark):
    """COCO-Order / Flickr30k-Order from a BLIP retrieval JSON (``[{"image", "caption": [...]}]``).

    The shuffles follow ``dataset_zoo/perturbations.py`` with tunevl's tagger in place of spaCy
    ``en_core_web_sm`` (spaCy itself when installed) and a regex tokeniser in place of
    ``nltk.word_tokenize``, drawn from one generator seeded with ``seed`` (the repository seeds 1);
    so the shuffled captions are the same kind but not the very same strings.

    Args:
        path: ``coco_karpathy_test.json`` / ``flickr30k_test.json`` (or the val files).
        image_root: Folder the ``image`` values are relative to (default: the JSON's folder).
        seed: Seed of the shuffles.
        max_words: ``pre_caption``'s word limit.
        name: Metric prefix.
        max_samples: First N (image, caption) tests.

    Metrics: ``precision@1`` (percent of tests whose original caption scores highest), ``num_items``.
    """

    def __init__(self, path: str, image_root: str | None = None, seed: int = 1, max_words: int = 30,
                 name: str | None = None, max_samples: int | None = None):
        super().__init__(name, max_samples)
        self.file = existing_file(path)
        root = existing_folder(image_root) if image_root is not None else os.path.dirname(self.file)
        data = read_json(self.file)
        if not isinstance(data, list):
            raise DataError(f"{self.file}: expected a JSON array of {{'image', 'caption'}} objects")
        rng = random.Random(seed)
        self.items = []
        for k, ann in enumerate(data):
            where = f"{self.file}: item {k}"
            need(ann, ("image", "caption"), where)
            captions = ann["caption"] if isinstance(ann["caption"], list) else [ann["caption"]]
            for caption in captions:
                if self.max_samples is not None and len(self.items) >= self.max_samples:
                    break
                options = [pre_caption(caption, max_words)]
                options += [pre_caption(fn(caption, rng), max_words) for fn in PERTURBATIONS]
                self.items.append({"image": os.path.join(root, ann["image"]), "options": options, "where": where})
        check_images([i["image"] for i in self.items], [i["where"] for i in self.items], self.file)

    def __len__(self) -> int:
        return len(self.items)

    def evaluate(self, encoder, batch_size: int | None = None) -> dict[str, Any]:
        unique = list(dict.fromkeys(i["image"] for i in self.items))
        position = {p: k for k, p in enumerate(unique)}
        table = embed_images(encoder, unique, batch_size)
        image = table[torch.tensor([position[i["image"]] for i in self.items])]
        k = len(PERTURBATIONS) + 1
        texts = embed_texts(encoder, [o for i in self.items for o in i["options"]], batch_size).reshape(len(self.items), k, -1)
        correct = option_correct(torch.einsum("nd,nkd->nk", image, texts), 0)
        return {"precision@1": 100.0 * correct.float().mean().item(), "num_items": len(self.items)}


class AroCocoOrder(_Order):
    __doc__ = _Order.__doc__
    key = "aro_coco_order"


class AroFlickrOrder(_Order):
    __doc__ = _Order.__doc__
    key = "aro_flickr_order"
