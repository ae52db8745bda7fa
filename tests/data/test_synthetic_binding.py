"""The attribute-binding set: two objects, the colour swap as caption and as image (same layout)."""

from __future__ import annotations

import numpy as np

from tunevl.data.synthetic import COLOURS, render_objects, render_shapes
from tunevl.data.synthetic_binding import SyntheticBinding, binding_caption


def test_render_shapes_is_render_objects_of_one_colour():
    a = render_shapes(4, "red", "star", seed=11, image_size=48)
    b = render_objects([("red", "star")] * 4, seed=11, image_size=48)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def _mask(image, colour):
    return np.all(np.asarray(image) == COLOURS[colour], axis=-1)


def test_records_and_the_swapped_scene():
    ds = SyntheticBinding(16, split="eval", seed=3)
    for i in range(16):
        (c1, s1), (c2, s2) = ds.scene(i)[0]
        assert c1 != c2 and s1 != s2
        r = ds[i]
        assert r["text"] == binding_caption([(c1, s1), (c2, s2)])
        assert r["negatives"] == [binding_caption([(c2, s1), (c1, s2)])] == [r["negative_image_text"]]
        assert r["negative_image_negatives"] == [r["text"]]
        # Same layout, colours exchanged: the pixels of colour 1 become colour 2 and back.
        assert np.array_equal(_mask(r["image"], c1), _mask(r["negative_image"], c2))
        assert np.array_equal(_mask(r["image"], c2), _mask(r["negative_image"], c1))
        assert _mask(r["image"], c1).any() and _mask(r["image"], c2).any()
    assert ds[5]["text"] == SyntheticBinding(16, split="eval", seed=3)[5]["text"]
    assert [ds.scene(i) for i in range(16)] != [SyntheticBinding(16, split="train", seed=3).scene(i) for i in range(16)]
    plain = SyntheticBinding(2, negatives=False, negative_images=False)[0]
    assert set(plain) == {"image", "text", "index"} and binding_caption([("orange", "star")]) == "an orange star"
