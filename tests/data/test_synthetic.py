"""Tests for tunevl.data.synthetic: determinism, captions, counts, export layout."""

import json
from collections import deque

import numpy as np
import pytest
from PIL import Image

from tunevl.data.synthetic import (
    BACKGROUND,
    COLOURS,
    NUMBER_WORDS,
    SHAPES,
    SyntheticShapes,
    caption_for,
    pluralise,
    render_shapes,
    write_synthetic,
)


def count_components(image: Image.Image, rgb: tuple[int, int, int]) -> int:
    """Connected components (8-connectivity) of pixels exactly equal to ``rgb``."""
    mask = np.all(np.asarray(image) == np.array(rgb, dtype=np.uint8), axis=-1)
    seen = np.zeros_like(mask)
    h, w = mask.shape
    n = 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        n += 1
        seen[y0, x0] = True
        todo = deque([(y0, x0)])
        while todo:
            y, x = todo.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                        seen[yy, xx] = True
                        todo.append((yy, xx))
    return n


def test_render_is_deterministic_and_seeded():
    a = render_shapes(4, "red", "triangle", seed=7)
    b = render_shapes(4, "red", "triangle", seed=7)
    c = render_shapes(4, "red", "triangle", seed=8)
    assert a.size == (64, 64) and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_render_background_noise_is_light():
    arr = np.asarray(render_shapes(1, "blue", "circle", seed=1, noise=6)).astype(int)
    bg = arr[np.all(arr != np.array(COLOURS["blue"]), axis=-1)]
    assert np.abs(bg - np.array(BACKGROUND)).max() <= 6
    plain = np.asarray(render_shapes(1, "blue", "circle", seed=1, noise=0))
    assert set(map(tuple, plain.reshape(-1, 3))) == {BACKGROUND, COLOURS["blue"]}


@pytest.mark.parametrize("shape", SHAPES)
def test_drawn_count_matches_caption_for_every_shape(shape):
    for count in range(1, 9):
        for seed in range(3):
            colour = sorted(COLOURS)[(count + seed) % len(COLOURS)]
            img = render_shapes(count, colour, shape, seed=100 * count + seed)
            assert count_components(img, COLOURS[colour]) == count, (shape, count, seed)


def test_dataset_records_schema_and_counts():
    ds = SyntheticShapes(num_samples=40, split="train", seed=3)
    words = {w: i for i, w in enumerate(NUMBER_WORDS)}
    for i in range(len(ds)):
        rec = ds[i]
        assert set(rec) == {"image", "text", "count", "index", "label"}
        assert rec["index"] == i and rec["image"].size == (64, 64)
        number, colour, noun = rec["text"].split(" ")
        assert words[number] == rec["count"]
        assert noun == (noun.rstrip("s") if rec["count"] == 1 else pluralise(noun[:-1]))
        assert count_components(rec["image"], COLOURS[colour]) == rec["count"]
        assert ds.classnames[rec["label"]] == rec["text"]
    assert ds.all_captions() == [ds[i]["text"] for i in range(len(ds))]


def test_dataset_is_pure_function_of_seed_split_index():
    a = SyntheticShapes(num_samples=16, split="train", seed=0)
    b = SyntheticShapes(num_samples=16, split="train", seed=0)
    ev = SyntheticShapes(num_samples=16, split="eval", seed=0)
    other_seed = SyntheticShapes(num_samples=16, split="train", seed=1)
    for i in (0, 5, 15):
        assert np.array_equal(np.asarray(a[i]["image"]), np.asarray(b[i]["image"]))
    assert a[-1]["index"] == 15
    for other in (ev, other_seed):
        for i in range(16):
            assert not np.array_equal(np.asarray(a[i]["image"]), np.asarray(other[i]["image"]))
        assert a.all_captions() != other.all_captions()
    # Length does not change records: index i is the same in a longer dataset.
    longer = SyntheticShapes(num_samples=100, split="train", seed=0)
    assert longer.all_captions()[:16] == a.all_captions()
    # Pinned so that a change of the data stream (which moves every recipe's numbers) is noticed.
    assert a.all_captions()[:4] == PINNED_TRAIN_CAPTIONS


PINNED_TRAIN_CAPTIONS = ["three green triangles", "five yellow circles", "one blue circle", "five red squares"]


def test_captions_and_plurals():
    assert caption_for(1, "red", "circle") == "one red circle"
    assert caption_for(3, "red", "circle") == "three red circles"
    assert caption_for(2, "white", "star") == "two white stars"
    assert pluralise("cross") == "crosses" and pluralise("box") == "boxes" and pluralise("square") == "squares"
    with pytest.raises(ValueError):
        caption_for(0, "red", "circle")


def test_classnames_and_vary():
    ds = SyntheticShapes(num_samples=30)
    assert len(ds.classnames) == 6 * 4 * 3 == len(set(ds.classnames))
    assert ds.caption_pool() == ds.classnames
    only_count = SyntheticShapes(num_samples=30, vary="count", colours=["purple", "red"], shapes=["star"])
    assert only_count.classnames == [caption_for(n, "purple", "star") for n in range(1, 7)]
    assert {only_count[i]["text"].split(" ", 1)[1].rstrip("s") for i in range(30)} == {"purple star"}
    cs = SyntheticShapes(num_samples=30, vary="colour+shape", max_count=3)
    assert all(t.startswith("one ") for t in cs.all_captions())
    assert len({t for t in cs.all_captions()}) > 4


@pytest.mark.parametrize(
    "kwargs",
    [{"colours": ["magenta"]}, {"shapes": ["hexagon"]}, {"max_count": 11}, {"max_count": 0},
     {"vary": "size"}, {"colours": []}, {"colours": ["red", "red"]}, {"num_samples": -1}],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        SyntheticShapes(**kwargs)


def test_index_out_of_range():
    ds = SyntheticShapes(num_samples=3)
    with pytest.raises(IndexError):
        ds[3]


def test_write_synthetic_layout_reads_back(tmp_path):
    ds = SyntheticShapes(num_samples=6, split="eval", seed=2, max_count=4)
    jsonl = write_synthetic(tmp_path / "out", ds)
    assert jsonl == tmp_path / "out" / "data.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 6
    for i, row in enumerate(rows):
        rec = ds[i]
        assert row == {"image": f"images/{i:06d}.png", "text": rec["text"], "count": rec["count"],
                       "label": rec["label"]}
        with Image.open(jsonl.parent / row["image"]) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(rec["image"]))
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["classnames"] == ds.classnames
    assert SyntheticShapes(**meta["config"]).all_captions() == ds.all_captions()
