"""Retrieval recall@k on hand-computed fixtures, with the standard multi-caption semantics."""

from __future__ import annotations

import pytest
import torch

from tunevl.eval import evaluate
from tunevl.eval.retrieval import caption_relevance, evaluate_retrieval, recall_at_k, retrieval_metrics
from tunevl.train.config import EvalConfig

# Rows: images A, B, C. Columns: their five captions each, a0..a4, b0..b4, c0..c4.
# sim[i, j] is the score of image i with caption j (the fake encoder below returns these as embeddings).
SIM = torch.tensor([
    #  a0    a1    a2    a3    a4    b0    b1    b2    b3    b4    c0    c1    c2    c3    c4
    [0.90, 0.50, 0.50, 0.30, 0.30, 0.60, 0.70, 0.80, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10],  # A
    [0.10, 0.10, 0.10, 0.10, 0.20, 0.55, 0.20, 0.20, 0.20, 0.20, 0.65, 0.70, 0.75, 0.10, 0.10],  # B
    [0.70, 0.65, 0.62, 0.10, 0.10, 0.61, 0.66, 0.68, 0.10, 0.10, 0.40, 0.45, 0.50, 0.55, 0.60],  # C
])
CAPTIONS = [[f"{g}{k}" for k in range(5)] for g in "abc"]
# image -> text, by hand (rank of each image's best own caption among the 15):
#   A: a0 = 0.90 beats every other caption                     -> rank 1
#   B: b0 = 0.55 is beaten by c2 0.75, c1 0.70, c0 0.65        -> rank 4
#   C: c4 = 0.60 is beaten by a0 .70 b2 .68 b1 .66 a1 .65 a2 .62 b0 .61 -> rank 7
#   R@1 = 1/3, R@5 = 2/3, R@10 = 3/3
# text -> image, by hand (is the caption's own image the best of the three?):
#   hits: a0 (A .9 > C .7), a3, a4, b3, b4, c3, c4; misses: a1, a2 (C higher), b0, b1, b2 (A and C higher),
#   c0, c1, c2 (B higher)  -> R@1 = 7/15; with 3 images, R@5 = R@10 = 100
EXPECTED = {"i2t_R@1": 100 / 3, "i2t_R@5": 200 / 3, "i2t_R@10": 100.0,
            "t2i_R@1": 700 / 15, "t2i_R@5": 100.0, "t2i_R@10": 100.0}


class FakeEncoder:
    """Images are one-hot vectors, captions are the score columns: image @ text.T == SIM."""

    batch_size = 2  # several batches over three images

    def __init__(self, sim=SIM, captions=CAPTIONS):
        self.sim = sim
        self.column = {c: j for j, c in enumerate(c for caps in captions for c in caps)}

    def embed_images(self, images):
        return torch.eye(self.sim.shape[0])[[ord(i) - ord("A") for i in images]]

    def embed_texts(self, texts):
        return self.sim.T[[self.column[t] for t in texts]]


def _records():
    return [{"image": g, "captions": caps, "text": caps[0]} for g, caps in zip("ABC", CAPTIONS)]


def test_hand_computed_recall_both_directions():
    metrics = evaluate(FakeEncoder(), _records(), EvalConfig(zeroshot=False))
    assert metrics.pop("num_images") == 3 and metrics.pop("num_texts") == 15
    assert metrics == pytest.approx(EXPECTED, abs=1e-9)
    assert evaluate_retrieval(FakeEncoder(), _records()) == pytest.approx({**EXPECTED, "num_images": 3, "num_texts": 15})


def test_recall_at_k_on_the_matrix_and_chunked_agree():
    _, relevant = caption_relevance(CAPTIONS, dedupe=False)
    assert recall_at_k(SIM, relevant) == pytest.approx(EXPECTED)
    images, texts = torch.eye(3), SIM.T.clone()
    for chunk in (1, 2, 1024):
        assert retrieval_metrics(images, texts, relevant, chunk=chunk) == pytest.approx(EXPECTED)


def test_text_to_image_recall_with_twelve_images():
    """Own image placed at a chosen rank for each text: R@k = share of texts whose rank <= k."""
    ranks = [1, 1, 2, 3, 5, 6, 8, 10, 11, 12, 4, 7]  # text j describes image j
    sim = torch.empty(12, 12)
    for j, rank in enumerate(ranks):
        others = [i for i in range(12) if i != j]
        for m, i in enumerate(others):
            sim[i, j] = 0.90 - 0.01 * m  # the other images, in a fixed descending order
        sim[j, j] = 0.905 - 0.01 * (rank - 1)  # just above the rank-th other image
    metrics = recall_at_k(sim, torch.eye(12, dtype=torch.bool))
    assert metrics["t2i_R@1"] == pytest.approx(100 * 2 / 12)   # ranks 1, 1
    assert metrics["t2i_R@5"] == pytest.approx(100 * 6 / 12)   # 1, 1, 2, 3, 5, 4
    assert metrics["t2i_R@10"] == pytest.approx(100 * 10 / 12)  # all but 11, 12


def test_against_a_brute_force_reference_on_random_embeddings():
    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(100, 8), dim=-1)
    relevant = torch.zeros(20, 100, dtype=torch.bool)
    relevant[torch.arange(100) // 5, torch.arange(100)] = True
    sim = images @ texts.T
    expected = {}
    for name, s, r in (("i2t", sim, relevant), ("t2i", sim.T, relevant.T)):
        for k in (1, 5, 10):
            hits = [bool(r[q, s[q].argsort(descending=True)[:k]].any()) for q in range(s.shape[0])]
            expected[f"{name}_R@{k}"] = 100.0 * sum(hits) / len(hits)
    assert retrieval_metrics(images, texts, relevant, chunk=7) == pytest.approx(expected)


def test_identical_captions_are_pooled_only_for_single_text_records():
    texts, relevant = caption_relevance([["x", "y"], ["x"]], dedupe=True)
    assert texts == ["x", "y"] and relevant.tolist() == [[True, True], [True, False]]
    texts, relevant = caption_relevance([["x", "y"], ["x"]], dedupe=False)
    assert texts == ["x", "y", "x"] and relevant.tolist() == [[True, True, False], [False, False, True]]

    class Pooled(FakeEncoder):
        def embed_texts(self, texts):
            return torch.tensor([[1.0, 0.0] if t == "same" else [0.0, 1.0] for t in texts])

        def embed_images(self, images):
            return torch.tensor([[1.0, 0.1], [0.9, 0.0]])[[ord(i) - ord("A") for i in images]]

    single = [{"image": "A", "text": "same"}, {"image": "B", "text": "same"}]
    pooled = evaluate(Pooled(), single, EvalConfig(zeroshot=False, ks=[1]))
    assert pooled["num_texts"] == 1 and pooled["t2i_R@1"] == 100.0 and pooled["i2t_R@1"] == 100.0
    # the standard protocol: two queries with identical embeddings, each relevant to its own image only
    separate = evaluate(Pooled(), single, EvalConfig(zeroshot=False, ks=[1], dedupe_captions=False))
    assert separate["num_texts"] == 2 and separate["t2i_R@1"] == 50.0


def test_max_samples_and_nothing_to_evaluate():
    metrics = evaluate(FakeEncoder(), _records(), EvalConfig(zeroshot=False, max_samples=2, ks=[1]))
    assert metrics["num_images"] == 2 and metrics["num_texts"] == 10
    from tunevl.errors import DataError

    with pytest.raises(DataError, match="^record 0: nothing to evaluate"):
        evaluate(FakeEncoder(), [{"image": "A"}], EvalConfig())
    with pytest.raises(DataError, match="^record 1: retrieval needs 'text' or 'captions', which this record lacks$"):
        evaluate(FakeEncoder(), [_records()[0], {"image": "B"}], EvalConfig())
