"""segment-* rewards: exact formulas with an oracle segmenter, right answers with the shipped one."""
import pytest
import torch

from pxpo import world
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
    for n in ("segment-colour", "segment-grow", "segment-shrink", "segment-inside-box", "segment-shape",
              "hf-segment"):
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
    assert (r.map[obj & left] == 1).all() and (r.map[obj & ~left] == -1).all() and (r.map[~obj] == 0).all()
    # shipped segmenter: a circle drawn in the left half vs in the right half
    img = _draw_circles(cx=[16.0, 48.0], cy=[30.0, 30.0], r=10.0)
    r = call("segment-inside-box", img, box=box)
    assert r.scalar[0] > 0 > r.scalar[1]
    assert r.info["object_inside"][0] > 0.9 and r.info["object_inside"][1] < 0.1


def _draw_circles(cx, cy, r):
    """Red circles on blue at the given centres: [B, 3, 64, 64]."""
    n = len(cx)
    masks = world.shape_masks(torch.zeros(n, dtype=torch.long).numpy(), torch.tensor(cx).numpy(),
                              torch.tensor(cy).numpy(), torch.full((n,), r).numpy(), 64)
    m = torch.from_numpy(masks)[:, None].float()
    red = torch.tensor(world.PALETTE["red"]).view(1, 3, 1, 1) / 255.0
    blue = torch.tensor(world.PALETTE["blue"]).view(1, 3, 1, 1) / 255.0
    return m * red + (1 - m) * blue


def test_segment_shape_right_shape_positive_wrong_negative(batch):
    b, images, labels = batch
    right = call("segment-shape", images, b.captions, target="caption")
    wrong = [world.caption(world.SHAPES[(world.SHAPES.index(s) + 1) % 4], c, bg)
             for s, c, bg in zip(b.shapes, b.colours, b.backgrounds)]
    bad = call("segment-shape", images, wrong, target="caption")
    obj = labels > 0
    assert right.map[obj].mean() > 0.8 and bad.map[obj].mean() < -0.8
    assert right.map[~obj].abs().mean() < 0.02
    assert (right.info["shape_agreement"] > 0.9).all()


def test_segment_shape_formula_with_oracle(batch):
    _, images, labels = batch
    r = call("segment-shape", images, target="square", segmenter=Oracle(labels))
    sq = world.LABELS.index("square")
    want = torch.where(labels == sq, 1.0, torch.where(labels > 0, -1.0, 0.0))
    assert torch.equal(r.map, want)


def test_configuration_errors():
    with pytest.raises(RewardError, match="unknown target 'hexagon'"):
        get_reward("segment-shape", target="hexagon")
    with pytest.raises(RewardError, match="not a colour"):
        get_reward("segment-colour", target="mauve")
    with pytest.raises(RewardError, match="x0 < x1"):
        get_reward("segment-inside-box", box=[0.6, 0, 0.5, 1])
    reward = get_reward("segment-shape", target="caption")
    with pytest.raises(RewardError, match="shapes-world prompts"):
        reward(torch.rand(1, 3, 64, 64), ["a photo of a dog"], [{}])
    with pytest.raises(RewardError, match="pxpo pretrain-segmenter"):
        get_reward("segment-grow", segmenter="/nonexistent/dir")(torch.rand(1, 3, 64, 64), [""], [{}])
