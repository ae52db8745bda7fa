"""The counting and NegCLIP objectives on the tiny CLIP: their batch parts, their terms against the pure
losses on the same embeddings, and the counting term's normalisation over an optimizer step."""

from __future__ import annotations

import pytest
import torch

from tunevl.data.synthetic import SyntheticShapes
from tunevl.data.synthetic_binding import SyntheticBinding
from tunevl.errors import DataError
from tunevl.losses import counting_loss, negclip_loss
from tunevl.models import ModelConfig, load_view
from tunevl.objectives import OBJECTIVES, Contrastive, Counting, NegClip
from tunevl.train.distributed import DistInfo
from tunevl.train.engine import TrainModule
from tunevl.train.loop import step_scales


@pytest.fixture(scope="module")
def view():
    v = load_view(ModelConfig("tiny-clip"))
    v.model.eval()
    return v


def _shapes(n, split="train"):
    ds = SyntheticShapes(n, split=split)
    return [ds[i] for i in range(n)]


def _embed_texts(view, texts):
    tok = view.tokenize(texts)
    return view.encode_texts(tok["input_ids"], tok.get("attention_mask"))


def test_registry_names():
    assert OBJECTIVES["counting"] is Counting and OBJECTIVES["negclip"] is NegClip


def test_counting_part_covers_only_clear_counting_records(view):
    records = [
        {"image": None, "text": "three red circles", "count": 3, "index": 0},
        {"image": None, "text": "a red circle", "index": 1},  # no count: a general record
        {"image": None, "text": "a dozen eggs", "count": 12, "index": 2},  # no clear count: left out
        {"image": None, "text": "two dogs", "count": 2, "counterfactual": "nine dogs", "index": 3},  # its own
    ]
    objective = Counting(seed=5)
    part = objective.collate(view, records)
    assert part["count_rows"].tolist() == [0, 3] and int(part["num_counting"]) == 2
    assert objective.counts(part) == {"counting": part["num_counting"]}
    texts = [t.strip() for t in view.processor.tokenizer.batch_decode(part["counterfactual_input_ids"], skip_special_tokens=True)]
    assert texts[0].endswith("red circles") and not texts[0].startswith("three") and texts[1] == "nine dogs"
    assert objective.collate(view, records)["counterfactual_input_ids"].equal(part["counterfactual_input_ids"])  # seeded
    none = objective.collate(view, [records[1], records[2]])
    assert int(none["num_counting"]) == 0 and none["count_rows"].tolist() == [0]  # one placeholder row


def test_counting_term_equals_the_pure_loss_and_is_a_connected_zero_without_records(view):
    records = _shapes(6)
    module = TrainModule(view, [Counting()])
    batch = module.collate(records, {"image", "text"})
    part = module.parts(batch)[0]
    rows = part["count_rows"]
    assert rows.tolist() == list(range(6))  # every synthetic record counts
    cf_texts = [Counting().counterfactual(r) for r in records]
    with torch.no_grad():
        got = module(batch)["counting"]
        img = view.encode_images(part["pixel_values"])
        want = counting_loss(img, _embed_texts(view, [r["text"] for r in records]), _embed_texts(view, cf_texts),
                             view.logit_scale())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    proj = view.base_model.text_projection.weight
    proj.requires_grad_(True)
    try:
        general = [{k: v for k, v in r.items() if k != "count"} for r in records[:3]]
        term = module(module.collate(general, {"image", "text"}))["counting"]
        assert term.item() == 0 and term.requires_grad
        term.backward()
        assert proj.grad is not None and torch.count_nonzero(proj.grad) == 0
    finally:
        proj.requires_grad_(False)
        proj.grad = None


def test_counting_is_a_mean_over_the_steps_counting_records(view):
    """Two micro-batches (3 counting records, then none) weigh like one batch of the 3."""
    records = _shapes(6)
    first = records[:3]
    second = [{k: v for k, v in r.items() if k != "count"} for r in records[3:]]
    module = TrainModule(view, [Contrastive(), Counting()])
    micro = [module.collate(b, {"image", "text"}) for b in (first, second)]
    scales = step_scales(module, micro, DistInfo(), accum=2)
    assert scales[0][(1, "counting")].item() == 1.0 and scales[1][(1, "counting")].item() == 0.0
    assert scales[0][None] == scales[1][None] == 0.5  # contrastive: a micro-batch mean, 1 / accumulation
    with torch.no_grad():
        step = sum(module(b, s)["counting"] for b, s in zip(micro, scales))
        whole = module(module.collate(first, {"image", "text"}))["counting"]
    torch.testing.assert_close(step, whole, rtol=1e-6, atol=1e-7)


def test_negclip_layout_and_term(view):
    ds = SyntheticBinding(4, split="eval", negatives=False)
    records = [ds[i] for i in range(4)]
    records[1] = {k: v for k, v in records[1].items() if not k.startswith("negative_image")}  # no neighbour
    records[2]["negatives"] = ["a purple blob"]  # a record's own hard caption wins over word swaps
    objective = NegClip(seed=1)
    captions, neg_images, neg_texts, hard = objective.layout(records)
    assert captions == [r["text"] for r in records]
    assert len(neg_images) == 3 and neg_texts == [records[k]["negative_image_text"] for k in (0, 2, 3)]
    assert len(hard) == 7 and "a purple blob" in hard  # one per image row: 4 captions + 3 neighbours
    from tunevl.data.hard_negatives import hard_negatives

    assert hard[0] in hard_negatives(records[0]["text"], max_candidates=None)

    module = TrainModule(view, [objective])
    batch = module.collate(records, {"image", "text"})
    part = module.parts(batch)[0]
    assert part["negative_pixel_values"].shape[0] == 3 and part["negclip_input_ids"].shape[0] == 4 + 3 + 7
    with torch.no_grad():
        got = module(batch)["negclip"]
        images = view.encode_images(torch.cat([part["pixel_values"], part["negative_pixel_values"]]))
        texts = _embed_texts(view, captions + neg_texts)
        want = negclip_loss(images, texts, _embed_texts(view, hard), view.logit_scale())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    only_captions = NegClip(negative_images=False, generate_negatives=False).layout(records)
    assert only_captions[1] == [] and only_captions[3] == ["a purple blob"]


def test_negclip_neighbour_without_caption_is_a_data_error():
    record = {"image": None, "text": "a cat", "negative_image": "x.png", "index": 7}
    with pytest.raises(DataError, match="record 7: negative_image needs negative_image_text"):
        NegClip().layout([record])
