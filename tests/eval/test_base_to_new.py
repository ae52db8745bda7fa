"""Base-to-new evaluation (CoCoOp): each half of the classes scored among its own classes, and the harmonic mean."""

from __future__ import annotations

import pytest
import torch

from tunevl.data.synthetic import SyntheticShapes
from tunevl.eval import evaluate
from tunevl.eval.base_to_new import base_to_new_metrics, harmonic_mean
from tunevl.models import ModelConfig, load_view
from tunevl.train.config import EvalConfig


def test_each_half_is_scored_among_its_own_classes():
    # 5 classes: base = 0, 1, 2; new = 3, 4. Row 1's overall best (class 4) is not a base class.
    scores = torch.tensor([
        [0.9, 0.1, 0.0, 0.0, 0.0],   # label 0: base, right
        [0.1, 0.5, 0.2, 0.0, 0.8],   # label 1: base, right among 0..2 (wrong over all 5)
        [0.1, 0.6, 0.2, 0.0, 0.0],   # label 2: base, wrong
        [0.0, 0.0, 0.0, 0.3, 0.2],   # label 3: new, right
        [0.9, 0.0, 0.0, 0.3, 0.2],   # label 4: new, wrong among 3..4 (class 0 is not a candidate)
        [0.0, 0.0, 0.0, 0.1, 0.2],   # label 4: new, right
    ])
    labels = torch.tensor([0, 1, 2, 3, 4, 4])
    out = base_to_new_metrics(scores, labels)
    assert out["base_top1"] == pytest.approx(200 / 3) and out["new_top1"] == pytest.approx(200 / 3)
    assert out["harmonic_mean"] == pytest.approx(200 / 3)
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140) and harmonic_mean(0.0, 0.0) == 0.0
    with pytest.raises(ValueError, match="no test image of the new classes"):
        base_to_new_metrics(scores, torch.tensor([0, 1, 2, 0, 1, 2]))


def test_evaluate_reports_base_to_new_on_a_synthetic_split():
    view = load_view(ModelConfig("tiny-clip"))
    ds = SyntheticShapes(num_samples=48, split="eval", vary="count")
    out = evaluate(view, ds, EvalConfig(retrieval=False, base_to_new=True))
    assert {"base_top1", "new_top1", "harmonic_mean", "zeroshot_top1"} <= set(out)
    assert out["harmonic_mean"] == pytest.approx(harmonic_mean(out["base_top1"], out["new_top1"]))
    # The base accuracy is the plain accuracy of the base images among the three base classes.
    from tunevl.inference import DualEncoder

    enc = DualEncoder(view)
    base = [i for i in range(48) if ds[i]["label"] < 3]
    images = enc.embed_images([ds[i]["image"] for i in base])
    text = enc.class_embeddings(ds.classnames[:3])
    right = ((images @ text.T).argmax(1) == torch.tensor([ds[i]["label"] for i in base])).float().mean().item()
    assert out["base_top1"] == pytest.approx(100 * right)
