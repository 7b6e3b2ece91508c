"""The scenes world: several independent parts, exact part and shape maps, partial captions."""

import numpy as np
import pytest
import torch

from pxpo.testbed import scenes
from pxpo.testbed.world import PALETTE, SHAPES


def test_part_maps_are_exact_and_objects_never_overlap():
    b = scenes.sample(64, seed=3, split="all")
    assert b.images.shape == (64, 64, 64, 3) and b.parts.shape == b.labels.shape == (64, 64, 64)
    for img, parts, labels, s in zip(b.images, b.parts, b.labels, b.scenes):
        colour = {scenes.SKY: s.sky, scenes.GROUND: s.ground} | {2 + k: o["colour"] for k, o in enumerate(s.objects)}
        for part, name in colour.items():
            where = parts == part
            assert where.any(), (part, s)  # every part is visible: objects sit in their own slots
            assert (img[where] == np.array(PALETTE[name], dtype=np.uint8)).all()
        assert set(np.unique(parts)) == set(colour)
        # the sky is above the horizon, the ground below it, wherever no object covers them
        assert not (parts[s.horizon :] == scenes.SKY).any() and not (parts[: s.horizon] == scenes.GROUND).any()
        for k, o in enumerate(s.objects):  # the shape map names each object's shape on its pixels
            assert (labels[parts == 2 + k] == SHAPES.index(o["shape"]) + 1).all()
        assert (labels[parts < 2] == 0).all()
        xs = [np.nonzero((parts == 2 + k).any(axis=0))[0] for k in range(len(s.objects))]
        assert all(a.max() < c.min() for a, c in zip(xs, xs[1:]))  # left to right, apart


def test_parts_vary_independently_and_draws_are_reproducible():
    b = scenes.sample(400, seed=0)
    counts = {len(s.objects) for s in b.scenes}
    horizons = [s.horizon for s in b.scenes]
    assert counts == {1, 2, 3} and min(horizons) < 26 < 38 < max(horizons)
    assert (
        len({(s.sky, s.ground) for s in b.scenes}) > 30 and len({o["size"] for s in b.scenes for o in s.objects}) == 2
    )
    assert all(o["colour"] not in (s.sky, s.ground) for s in b.scenes for o in s.objects)
    again = scenes.sample(400, seed=0)
    assert np.array_equal(b.images, again.images) and b.captions == again.captions
    x, parts = b.tensors()
    assert x.shape == (400, 3, 64, 64) and x.max() <= 1 and parts.dtype == torch.long


def test_heldout_pairs_and_objects_stay_out_of_training():
    assert len(scenes.HELDOUT_PAIRS) == 8 and len(scenes.HELDOUT_OBJECTS) == 6
    assert not any(s.is_heldout() for s in scenes.sample(300, seed=1, split="train").scenes)
    assert all(s.is_heldout() for s in scenes.sample(100, seed=1, split="heldout").scenes)
    with pytest.raises(ValueError, match="split 'test' is unknown"):
        scenes.sample(2, split="test")


def test_captions_name_all_some_or_none_of_the_parts():
    s = scenes.Scene(
        [
            {"shape": "circle", "colour": "red", "size": "small", "cx": 10, "cy": 10, "r": 5},
            {"shape": "square", "colour": "blue", "size": "large", "cx": 40, "cy": 30, "r": 10},
        ],
        "white",
        "green",
        30,
    )
    assert scenes.caption(s) == "a small red circle and a large blue square on a green ground under a white sky"
    keep = {"objects": [{"size": False}, {"colour": False, "shape": False}], "sky": False}
    assert scenes.caption(s, keep) == "a red circle and a large shape on a green ground"
    assert scenes.caption(s, {"objects": [False, False], "sky": False, "ground": False}) == ""
    rng = np.random.default_rng(0)
    drawn = {scenes.caption(s, scenes.random_keep(s, rng, 0.3)) for _ in range(200)}
    assert len(drawn) > 20 and scenes.caption(s) in drawn
    for text in drawn:
        assert not scenes.unknown_words(text)


def test_a_scenes_tokenizer_encodes_every_caption_exactly(tmp_path):
    from pxpo.testbed.tokenizer import build_tokenizer

    from pxpo.testbed.world import COLOURS

    tok = build_tokenizer(tmp_path, scenes.VOCABULARY, max_length=scenes.MAX_TOKENS)
    longest = max(COLOURS, key=lambda w: len(tok(w).input_ids))
    worst = scenes.Scene([{"shape": "triangle", "colour": longest, "size": "small"}] * 3, longest, longest, 30)
    for cap in scenes.sample(50, seed=4).captions + [scenes.caption(worst)]:
        ids = tok(cap, padding="max_length", max_length=scenes.MAX_TOKENS, truncation=True).input_ids
        assert tok.decode(ids, skip_special_tokens=True).strip() == cap
        assert len(tok(cap).input_ids) < scenes.MAX_TOKENS  # nothing truncated
    with pytest.raises(ValueError, match="'tree'"):
        scenes.check_vocabulary(["a red circle under a tree"])
