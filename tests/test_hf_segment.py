"""hf-segment adapter, on a tiny randomly initialised SegFormer saved offline to tmp_path."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pxpo.testbed import world
from pxpo.rewards import RewardError, get_reward, validate

torch.set_num_threads(1)
ID2LABEL = {0: "background", 1: "person", 2: "sky"}


@pytest.fixture(scope="module")
def segformer_dir(tmp_path_factory):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(0)
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 1],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        id2label=ID2LABEL,
        label2id={v: k for k, v in ID2LABEL.items()},
    )
    path = tmp_path_factory.mktemp("segformer")
    SegformerForSemanticSegmentation(config).save_pretrained(path)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def images():
    return world.sample(3, seed=2).tensors()[0]  # [3, 3, 64, 64]


def expected_map(path, images, weights: dict[int, float]) -> torch.Tensor:
    """Σ weight · softmax prob, computed by hand: ImageNet normalisation, model, upsample, softmax."""
    from transformers import SegformerForSemanticSegmentation

    net = SegformerForSemanticSegmentation.from_pretrained(path, local_files_only=True).eval()
    x = images.mul(255).round().div(255)
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    with torch.no_grad():
        logits = net(pixel_values=(x - mean) / std).logits
    p = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False).softmax(1)
    return sum(w * p[:, k] for k, w in weights.items())


def test_map_is_weighted_softmax_probability(segformer_dir, images):
    reward = get_reward("hf-segment", model=str(segformer_dir), labels={"person": 1.0, "sky": -0.5})
    r = validate(reward(images, [""] * 3, [{}] * 3), "hf-segment", images)
    assert r.map.shape == (3, 64, 64)
    want = expected_map(segformer_dir, images, {1: 1.0, 2: -0.5})
    assert torch.allclose(r.map, want, atol=1e-4), (r.map - want).abs().max()
    assert set(r.info) == {"p_person", "p_sky"} and r.info["p_person"].shape == (3,)


def test_labels_by_id_and_case_insensitive_name(segformer_dir, images):
    a = get_reward("hf-segment", model=str(segformer_dir), labels={"SKY": 2.0})(images, [""] * 3, [{}] * 3)
    b = get_reward("hf-segment", model=str(segformer_dir), labels={2: 2.0})(images, [""] * 3, [{}] * 3)
    assert torch.allclose(a.map, b.map)
    all_classes = get_reward("hf-segment", model=str(segformer_dir), labels={0: 1, 1: 1, 2: 1})
    total = all_classes(images, [""] * 3, [{}] * 3).map
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)  # probabilities sum to one


def test_other_image_sizes_give_maps_of_that_size(segformer_dir):
    x = torch.rand(2, 3, 40, 56)
    r = get_reward("hf-segment", model=str(segformer_dir), labels={"person": 1.0})(x, ["", ""], [{}, {}])
    assert r.map.shape == (2, 40, 56)
    assert np.isfinite(r.map.numpy()).all()


def test_unknown_label_lists_the_models_labels(segformer_dir):
    with pytest.raises(RewardError, match=r"unknown label 'dog'.*background, person, sky"):
        get_reward("hf-segment", model=str(segformer_dir), labels={"dog": 1.0})
    with pytest.raises(RewardError, match="out of range"):
        get_reward("hf-segment", model=str(segformer_dir), labels={7: 1.0})
    with pytest.raises(RewardError, match="non-empty mapping"):
        get_reward("hf-segment", model=str(segformer_dir), labels={})


def test_missing_model_says_how_to_fix(tmp_path):
    with pytest.raises(RewardError, match="local_files_only=False"):
        get_reward("hf-segment", model=str(tmp_path / "nowhere"), labels={"person": 1.0})
    with pytest.raises(RewardError, match="needs model="):
        get_reward("hf-segment", labels={"person": 1.0})
