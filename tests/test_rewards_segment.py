"""segment-* rewards: exact formulas with an oracle segmenter, right answers with the shipped one."""

import pytest
import torch

from pxpo.testbed import world
from pxpo.rewards import RewardError, get_reward, validate
from pxpo.rewards.colour import colour_distance, max_distance

torch.set_num_threads(1)


class Oracle:
    """A 'segmenter' whose probabilities are the exact label maps (one-hot)."""

    labels = world.LABELS

    def __init__(self, labels):
        self.truth = labels  # [B, H, W]

    def probs(self, images):
        return torch.nn.functional.one_hot(self.truth, len(self.labels)).permute(0, 3, 1, 2).float()

    def masks(self, images):
        return (self.truth > 0).float()

    def label_index(self, name):
        return self.labels.index(name)


@pytest.fixture(scope="module")
def batch():
    b = world.sample(8, seed=21, split="heldout")
    images, labels = b.tensors()
    return b, images, labels


def call(name, images, prompts=None, **params):
    reward = get_reward(name, **params)
    prompts = prompts or [""] * len(images)
    return validate(reward(images, prompts, [{}] * len(images)), name, images)


def test_all_registered():
    from pxpo.rewards import available

    names = available()
    for n in ("segment-colour", "segment-grow", "segment-shrink", "segment-inside-box", "segment-shape", "hf-segment"):
        assert n in names and names[n]


def test_segment_colour_formula_with_oracle(batch):
    b, images, labels = batch
    r = call("segment-colour", images, target="red", space="rgb", segmenter=Oracle(labels))
    obj = (labels > 0).float()
    red = torch.tensor(world.PALETTE["red"]) / 255.0
    close = 1 - colour_distance(images, red, "rgb") / max_distance(tuple(red.tolist()), "rgb")
    assert torch.allclose(r.map, obj * close.clamp(0, 1), atol=1e-6)


def test_segment_colour_true_colour_high_on_object_zero_on_background(batch):
    b, images, labels = batch
    r = call("segment-colour", images, b.captions, target="caption")
    obj, bg = labels > 0, labels == 0
    assert r.map[obj].mean() > 0.9
    assert r.map[bg].abs().mean() < 0.02
    assert (r.info["colour_on_object"] > 0.9).all()
    # a wrong target colour (the background's) scores far lower on the object
    wrong = [world.caption(s, bgc, c) for s, c, bgc in zip(b.shapes, b.colours, b.backgrounds)]
    r_wrong = call("segment-colour", images, wrong, target="caption")
    assert r_wrong.map[obj].mean() < r.map[obj].mean() - 0.2


def test_grow_and_shrink(batch):
    b, images, labels = batch
    grow = call("segment-grow", images)
    shrink = call("segment-shrink", images)
    assert torch.allclose(grow.map, -shrink.map)
    frac = (labels > 0).float().mean(dim=(1, 2))
    assert torch.allclose(grow.scalar, frac, atol=0.02)
    assert grow.map.min() >= 0 and shrink.map.max() <= 0


def test_inside_box_signs(batch):
    _, images, labels = batch
    box = [0.0, 0.0, 0.5, 1.0]  # left half
    r = call("segment-inside-box", images, box=box, segmenter=Oracle(labels))
    left = torch.zeros(64, 64, dtype=torch.bool)
    left[:, :32] = True
    obj = labels > 0
    assert (r.map[obj & left] == 1).all() and (r.map[obj & ~left] == -1).all()
    assert (r.map[~obj & left] == -1).all() and (r.map[~obj & ~left] == 0).all()  # fill=1: empty box pixels cost
    r0 = call("segment-inside-box", images, box=box, fill=0.0, segmenter=Oracle(labels))
    assert (r0.map[~obj] == 0).all() and torch.equal(r0.map[obj], r.map[obj])
    # shipped segmenter: a circle drawn in the left half vs in the right half
    img = _draw_circles(cx=[16.0, 48.0], cy=[30.0, 30.0], r=10.0)
    r = call("segment-inside-box", img, box=box)
    assert r.scalar[0] > r.scalar[1] + 0.1
    assert r.info["object_inside"][0] > 0.9 and r.info["object_inside"][1] < 0.1


def test_inside_box_shrinking_outside_does_not_pay_with_fill(batch):
    # a circle straddling the box edge: shrinking it scores less than moving it into the box
    box = [0.0, 0.0, 0.5, 1.0]
    img = _draw_circles(cx=[32.0, 32.0, 18.0], cy=[32.0, 32.0, 32.0], r=[12.0, 5.0, 12.0])
    r = call("segment-inside-box", img, box=box)
    straddle, shrunk, moved = r.scalar.tolist()
    assert moved > straddle + 0.05 and moved > shrunk + 0.05


def _draw_circles(cx, cy, r, shapes=None):
    """Red shapes (circles unless ``shapes`` names them) on blue at the given centres: [B, 3, 64, 64]."""
    n = len(cx)
    radii = torch.tensor(r if isinstance(r, list) else [r] * n)
    kinds = torch.tensor([world.SHAPES.index(s) for s in (shapes or ["circle"] * n)])
    masks = world.shape_masks(kinds.numpy(), torch.tensor(cx).numpy(), torch.tensor(cy).numpy(), radii.numpy(), 64)
    m = torch.from_numpy(masks)[:, None].float()
    red = torch.tensor(world.PALETTE["red"]).view(1, 3, 1, 1) / 255.0
    blue = torch.tensor(world.PALETTE["blue"]).view(1, 3, 1, 1) / 255.0
    return m * red + (1 - m) * blue


def test_fitted_template_matches_the_world_shape(batch):
    from pxpo.testbed.segment.reward import fitted_templates

    b, _, labels = batch
    m = (labels > 0).float()
    t = fitted_templates(m, b.shapes)
    iou = (m * t).sum(dim=(1, 2)) / ((m + t) > 0).float().sum(dim=(1, 2))
    assert (iou > 0.9).all(), iou  # each object's own shape, refitted from its mask alone
    assert not fitted_templates(torch.zeros(1, 64, 64), ["circle"]).any()


def test_segment_shape_rewards_the_outline_not_the_size(batch):
    b, images, labels = batch
    right = call("segment-shape", images, b.captions, target="caption")
    wrong = [
        world.caption(world.SHAPES[(world.SHAPES.index(s) + 1) % 4], c, bg)
        for s, c, bg in zip(b.shapes, b.colours, b.backgrounds)
    ]
    bad = call("segment-shape", images, wrong, target="caption")
    assert (right.scalar > bad.scalar + 0.05).all(), (right.scalar, bad.scalar)
    assert (right.scalar > -0.15).all() and right.map.max() <= 0
    assert (right.info["template_iou"] > 0.85).all() and (right.info["shape_agreement"] > 0.9).all()
    # size-normalised: a square scores the same (to rasterisation) at half the size, a circle beats both
    img = _draw_circles(cx=[32.0] * 3, cy=[32.0] * 3, r=[16.0, 8.0, 16.0], shapes=["square", "square", "circle"])
    big, small, circle = call("segment-shape", img, target="circle").scalar.tolist()
    assert abs(big - small) < 0.04 and circle > max(big, small) + 0.05, (big, small, circle)
    # fit="reference": the template comes from the reference picture, so shrinking costs
    ref_meta = [{"reference": img[0]}]
    as_was = get_reward("segment-shape", target="square", fit="reference")(img[:1], [""], ref_meta).scalar
    shrunk = get_reward("segment-shape", target="square", fit="reference")(img[1:2], [""], ref_meta).scalar
    assert shrunk < as_was - 0.3


def test_segment_shape_formula_with_oracle(batch):
    from pxpo.testbed.segment.reward import fitted_templates

    b, images, labels = batch
    r = call("segment-shape", images, target="square", segmenter=Oracle(labels))
    m = (labels > 0).float()
    t = fitted_templates(m, ["square"] * len(m))
    want = -(t - m).abs() * (64 * 64 / (2 * t.sum(dim=(1, 2))))[:, None, None]
    assert torch.allclose(r.map, want)
    with pytest.raises(RewardError, match="reference image"):
        call("segment-shape", images, target="square", fit="reference", segmenter=Oracle(labels))


def test_configuration_errors():
    with pytest.raises(RewardError, match="unknown target 'hexagon'"):
        get_reward("segment-shape", target="hexagon")
    with pytest.raises(RewardError, match="not a colour"):
        get_reward("segment-colour", target="mauve")
    with pytest.raises(RewardError, match="fit='template'"):
        get_reward("segment-shape", fit="template")
    with pytest.raises(RewardError, match="fill"):
        get_reward("segment-inside-box", fill=-1)
    with pytest.raises(RewardError, match="x0 < x1"):
        get_reward("segment-inside-box", box=[0.6, 0, 0.5, 1])
    reward = get_reward("segment-shape", target="caption")
    with pytest.raises(RewardError, match="shapes-world prompts"):
        reward(torch.rand(1, 3, 64, 64), ["a photo of a dog"], [{}])
    with pytest.raises(RewardError, match="pxpo pretrain-segmenter"):
        get_reward("segment-grow", segmenter="/nonexistent/dir")(torch.rand(1, 3, 64, 64), [""], [{}])
