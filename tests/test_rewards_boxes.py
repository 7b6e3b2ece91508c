"""The boxes reward: maps painted from boxes (a detector's or given), over a base or without an opinion."""

import pytest
import torch

from pxpo.rewards import RewardError, build_reward
from pxpo.rewards.boxes import box_mask, check_box, paint_boxes


def test_a_box_covers_the_pixels_whose_centres_lie_in_it():
    m = box_mask((0.0, 0.0, 0.5, 0.25), 8, 8)
    assert m.sum() == 4 * 2 and m[:2, :4].all() and not m[2:].any() and not m[:, 4:].any()


def test_painting_blends_each_box_by_its_importance_over_a_base_the_most_important_last():
    boxes = [[check_box([0, 0, 1, 1, 1.0, 0.5]), check_box([0, 0, 0.5, 1, -1.0, 1.0])]]
    r, w = paint_boxes(boxes, 4, 4, base=0.0)
    assert torch.equal(w, torch.ones(1, 4, 4))  # a base: an opinion everywhere
    assert torch.allclose(r[0, :, 2:], torch.full((4, 2), 0.5))  # 0.5 * 0 + 0.5 * 1
    assert torch.allclose(r[0, :, :2], torch.full((4, 2), -1.0))  # importance 1 replaces, painted last


def test_without_a_base_only_the_boxes_have_an_opinion_weighted_by_importance():
    r, w = paint_boxes([[check_box({"box": [0.5, 0.5, 1, 1], "score": 0.8, "importance": 0.25})], []], 4, 4)
    assert torch.allclose(r[0, 2:, 2:], torch.full((2, 2), 0.8)) and float(r[0, :2].abs().sum()) == 0
    assert torch.allclose(w[0, 2:, 2:], torch.full((2, 2), 0.25)) and float(w[0].sum()) == pytest.approx(1.0)
    assert float(w[1].sum()) == 0  # a picture with no box: no opinion anywhere


def test_given_boxes_make_a_reward_the_trainer_can_use_and_bad_boxes_say_what_to_change():
    reward = build_reward({"name": "boxes", "params": {"boxes": [[0, 0, 0.5, 1, 1.0]], "base": 0.0}})
    out = reward(torch.rand(2, 3, 8, 8), ["", ""], [{}, {}])
    assert out.map.shape == (2, 8, 8) and float(out.map[:, :, :4].min()) == 1.0 and float(out.map[:, :, 4:].max()) == 0
    with pytest.raises(RewardError, match="0 <= x0 < x1 <= 1"):
        build_reward({"name": "boxes", "params": {"boxes": [[0.6, 0, 0.5, 1, 1.0]]}})
    with pytest.raises(RewardError, match="needs a detector"):
        build_reward({"name": "boxes", "params": {}})
    with pytest.raises(RewardError, match="unknown boxes detector"):
        build_reward({"name": "boxes", "params": {"detector": "no-such"}})


def test_the_scenes_detector_scores_each_object_by_its_colour():
    from pxpo.testbed import scenes

    batch = scenes.sample(4, seed=5)
    images = batch.tensors()[0]
    reward = build_reward(
        {"name": "boxes", "params": {"detector": "scene-objects", "detector_params": {"target": "red"}}}
    )
    out = reward(images, batch.captions, [{} for _ in range(4)])
    for i, scene in enumerate(batch.scenes):
        assert int(out.info["boxes_per_picture"][i]) == len(scene.objects)
    inside = out.weight > 0
    assert inside.any() and (~inside).any()  # opinions only on the objects' boxes
    reds = [o["colour"] == "red" for s in batch.scenes for o in s.objects]
    assert (float(out.map.max()) == 1.0) == any(reds)
