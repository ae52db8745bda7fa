"""Zero-shot classification: hand-built accuracy, CLIP-style template ensembling, DualEncoder.classify."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tunevl.eval import evaluate
from tunevl.eval.zeroshot import class_embeddings, zeroshot_metrics
from tunevl.train.config import EvalConfig


def test_hand_built_top_k_and_mean_per_class():
    classes = torch.eye(3)
    images = torch.tensor([
        [0.9, 0.4, 0.1],  # label 0: class 0 first             -> top-1 hit
        [0.8, 0.5, 0.1],  # label 1: class 1 second            -> top-1 miss, top-2 hit
        [0.6, 0.3, 0.1],  # label 2: class 2 third             -> misses
        [0.1, 0.9, 0.3],  # label 1: class 1 first             -> hit
    ])
    labels = torch.tensor([0, 1, 2, 1])
    out = zeroshot_metrics(images, classes, labels, ks=(1, 2, 5))
    # top-5 with 3 classes is always 100%: left out. Mean per class: (1/1 + 1/2 + 0/1) / 3.
    assert out == pytest.approx({"zeroshot_top1": 50.0, "zeroshot_top2": 75.0, "zeroshot_mean_per_class": 50.0})


def test_templates_are_ensembled_after_normalising():
    prompts = {"a photo of a cat.": [10.0, 0.0], "a cat.": [0.0, 1.0], "a photo of a dog.": [0.0, 3.0], "a dog.": [0.0, 1.0]}
    embeds = class_embeddings(lambda texts: torch.tensor([prompts[t] for t in texts]), ["cat", "dog"],
                              ["a photo of a {}.", "a {}."])
    # cat: mean of (1, 0) and (0, 1) -> (1, 1)/sqrt(2), not the direction of (10, 1); dog: (0, 1)
    assert torch.allclose(embeds, torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="has no '{}'"):
        class_embeddings(lambda texts: torch.zeros(len(texts), 2), ["cat"], ["a photo"])


class _Encoder:
    batch_size = 3

    def embed_images(self, images):
        return torch.tensor([[1.0, 0.0] if i == "cat-like" else [0.0, 1.0] for i in images])

    def embed_texts(self, texts):
        return torch.tensor([[1.0, 0.0] if "cat" in t else [0.0, 1.0] for t in texts])


class _Labelled(list):
    classnames = ["cat", "dog"]


def test_evaluate_runs_zero_shot_on_labelled_records():
    data = _Labelled([{"image": "cat-like", "label": 0}, {"image": "dog-like", "label": 1}, {"image": "cat-like", "label": 1},
                      {"image": "dog-like", "label": 1}])
    out = evaluate(_Encoder(), data, EvalConfig(templates=["a {}", "the {}"]))
    assert out == pytest.approx({"zeroshot_top1": 75.0, "zeroshot_mean_per_class": (100 + 200 / 3) / 2,
                                 "num_classes": 2, "num_images": 4})
    with_text = _Labelled([dict(r, text=r["image"]) for r in data])
    both = evaluate(_Encoder(), with_text, EvalConfig(ks=[1]))
    assert {"i2t_R@1", "t2i_R@1", "zeroshot_top1", "num_texts"} <= set(both)
    assert "zeroshot_top1" not in evaluate(_Encoder(), with_text, EvalConfig(zeroshot=False))


def test_classify_with_a_template_list_matches_the_manual_ensemble(tiny_clip_path):
    from PIL import Image

    from tunevl.inference import DualEncoder
    from tunevl.models import ModelConfig, load_view

    m = DualEncoder(load_view(ModelConfig(name_or_path=tiny_clip_path)))
    images = [Image.new("RGB", (32, 32), (200, 30 * k, 10)) for k in range(3)]
    classnames, templates = ["red circle", "blue square"], ["a photo of a {}.", "a drawing of a {}.", "{}"]
    probs = m.classify(images, classnames, templates)
    per_template = torch.stack([F.normalize(m.embed_texts([t.format(c) for t in templates]), dim=-1).mean(0)
                                for c in classnames])
    expected = (m.view.logit_scale() * m.embed_images(images) @ F.normalize(per_template, dim=-1).T).softmax(-1)
    assert probs.shape == (3, 2) and torch.allclose(probs, expected, atol=1e-6)
    single = m.classify(images, classnames, "a photo of a {}.")
    text = m.embed_texts([f"a photo of a {c}." for c in classnames])
    assert torch.allclose(single, (m.view.logit_scale() * m.embed_images(images) @ text.T).softmax(-1), atol=1e-6)
    assert not torch.allclose(single, probs)


def test_eval_config_checks_templates():
    with pytest.raises(ValueError, match="has no '{}'"):
        EvalConfig(templates=["a photo"])
    assert EvalConfig(templates="a {}").templates == ["a {}"]
