"""The scenes reader: parts read back from pictures, without a learned model."""

import numpy as np
import torch

from pxpo.testbed import scene_reader as sr
from pxpo.testbed import scenes


def test_reads_rendered_scenes_exactly():
    b = scenes.sample(48, seed=3, split="all")
    x, parts = b.tensors()
    r = sr.read(x)
    assert np.array_equal(r.parts, parts.numpy())  # every pixel's part, objects numbered left to right
    assert r.sky == [s.sky for s in b.scenes] and r.ground == [s.ground for s in b.scenes]
    assert np.array_equal(r.horizon, [s.horizon for s in b.scenes])
    for s, objs in zip(b.scenes, r.objects):
        assert [o["colour"] for o in objs] == [o["colour"] for o in s.objects]
    sizes = [
        (o["size"] == "small", a["area"] < sr.SMALL_AREA)
        for s, objs in zip(b.scenes, r.objects)
        for o, a in zip(s.objects, objs)
    ]
    assert np.mean([a == b for a, b in sizes]) > 0.9  # size is read from the area (shapes differ in area)


def test_reading_survives_noise_and_blur():
    b = scenes.sample(32, seed=5)
    x, parts = b.tensors()
    g = torch.Generator().manual_seed(0)
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    noisy = (blurred + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    r = sr.read(noisy)
    assert (r.parts == parts.numpy()).mean() > 0.95
    assert np.mean([len(o) == len(s.objects) for o, s in zip(r.objects, b.scenes)]) > 0.9


def test_part_masks_name_the_right_pixels():
    b = scenes.sample(32, seed=7, split="all")
    x, parts = b.tensors()
    p, r = parts.numpy(), sr.read(x)
    assert np.array_equal(sr.part_masks("sky", r), p == scenes.SKY)
    assert np.array_equal(sr.part_masks("objects", r), p >= 2)
    assert np.array_equal(sr.part_masks("background", r) | sr.part_masks("objects", r), np.ones_like(p, bool))
    left, right = sr.part_masks("object-left", r), sr.part_masks("object-right", r)
    for i, s in enumerate(b.scenes):
        n = len(s.objects)
        assert left[i].any() == right[i].any() == (n >= 2)  # one object is neither left nor right of another
        if n >= 2:
            assert np.array_equal(left[i], p[i] == 2) and np.array_equal(right[i], p[i] == 1 + n)
    small, large = sr.part_masks("small-objects", r), sr.part_masks("large-objects", r)
    assert not (small & large).any() and np.array_equal(small | large, p >= 2)
    fill = r.fill()  # objects painted over by the background around them
    assert torch.equal(fill[:, :, 0], x[:, :, 0] * 0 + fill[:, :, 0])
    sky_rgb = x.permute(0, 2, 3, 1).numpy()[p == scenes.SKY]
    assert np.allclose(fill.permute(0, 2, 3, 1).numpy()[p == scenes.SKY], sky_rgb, atol=1e-6)


def test_components_are_eight_connected():
    m = torch.zeros(1, 6, 6, dtype=torch.bool)
    m[0, 0, 0] = m[0, 1, 1] = True  # diagonal neighbours: one component
    m[0, 4, 4] = m[0, 4, 5] = True
    lab = sr.components(m)[0]
    assert lab[0, 0] == lab[1, 1] != lab[4, 4] == lab[4, 5] and (lab[~m[0]] == 0).all()
