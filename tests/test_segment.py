"""The shipped shapes-world segmenter: loads offline, well-formed probabilities, held-out mIoU >= 0.9."""

import json

import pytest
import torch

from pxpo.testbed import world
from pxpo.testbed.segment import SHIPPED, Segmenter, load_segmenter
from pxpo.testbed.segment.augment import degrade
from pxpo.testbed.segment.metrics import confusion, iou_from_confusion, segmenter_miou
from pxpo.testbed.segment.model import SegmenterConfig, SegmenterNet, load_net, save_segmenter
from pxpo.testbed.segment.train import SegmenterTrainConfig, train_segmenter

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def seg():
    return load_segmenter()


def test_shipped_weights_are_small_and_logged():
    size = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert size < 2_000_000
    log = json.loads((SHIPPED / "train_log.json").read_text())
    assert log["command"].startswith("pxpo pretrain-segmenter") and "seed" in log and log["train_seconds"] > 0
    assert log["heldout_miou"]["mean"] >= 0.9


def test_loads_once_and_reports_labels(seg):
    assert load_segmenter() is seg and load_segmenter(SHIPPED) is seg
    assert seg.labels == world.LABELS


def test_probs_shape_and_normalisation(seg):
    images, _ = world.sample(4, seed=1, split="heldout").tensors()
    p = seg.probs(images)
    assert p.shape == (4, len(world.LABELS), 64, 64)
    assert torch.allclose(p.sum(1), torch.ones(4, 64, 64), atol=1e-5)
    m = seg.masks(images)
    assert m.shape == (4, 64, 64) and m.min() >= 0 and m.max() <= 1
    assert torch.allclose(m, 1 - p[:, 0])


def test_heldout_miou_at_least_0_9(seg):
    res = segmenter_miou(seg, n=128, split="heldout", seed=123)
    assert res["mean"] >= 0.9, res
    assert set(res) == set(world.LABELS) | {"mean"}


def test_other_sizes_are_resized_and_back(seg):
    images, labels = world.sample(2, seed=3).tensors()
    big = torch.nn.functional.interpolate(images, size=(96, 96), mode="nearest")
    p = seg.probs(big)
    assert p.shape == (2, len(world.LABELS), 96, 96)
    # the object is still found: most true object pixels have P(object) > 0.5
    truth = torch.nn.functional.interpolate(labels[:, None].float(), size=(96, 96), mode="nearest")[:, 0] > 0
    assert (seg.masks(big)[truth] > 0.5).float().mean() > 0.9


def test_bad_input_is_explained(seg):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        seg.probs(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="no class 'hexagon'"):
        seg.label_index("hexagon")


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = SegmenterNet(SegmenterConfig(channels=[8, 16], groups=4)).eval()
    save_segmenter(net, tmp_path / "s")
    again = load_net(tmp_path / "s")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(net(x), again(x))
    with pytest.raises(FileNotFoundError, match="pxpo pretrain-segmenter"):
        load_net(tmp_path / "missing")


def test_training_steps_run():
    cfg = SegmenterTrainConfig(steps=3, batch=4, warmup=1, log_every=100)
    net, log = train_segmenter(cfg, log=lambda *_: None)
    assert isinstance(Segmenter(net).probs(torch.rand(1, 3, 64, 64)), torch.Tensor)
    assert log["final_loss_ema"] > 0 and log["num_parameters"] > 0


def test_degrade_keeps_images_and_labels_consistent():
    images, labels = world.sample(8, seed=0).tensors()
    g = torch.Generator().manual_seed(0)
    x, y = degrade(images, labels, g, p=1.0)
    assert x.shape == images.shape and y.shape == labels.shape and y.dtype == labels.dtype
    assert x.min() >= 0 and x.max() <= 1
    assert set(y.unique().tolist()) <= set(range(len(world.LABELS)))
    # objects keep roughly their area (the warp moves edges by a pixel or two only)
    assert ((y > 0).float().mean() - (labels > 0).float().mean()).abs() < 0.02


def test_iou_from_confusion():
    truth = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])
    res = iou_from_confusion(confusion(pred, truth, 3), ("a", "b", "c"))
    assert res == {"a": 0.5, "b": round(2 / 3, 4), "mean": round((0.5 + 2 / 3) / 2, 4)}  # "c" never occurs
