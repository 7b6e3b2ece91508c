"""The model-free evaluator: exact on world images, robust to mild degradation, and wired to pipelines."""

import numpy as np
import pytest
import torch

from pxpo.testbed import world
from pxpo.testbed.evaluate import evaluate_pipeline, fit_shapes, heldout_prompts, judge, largest_component, main, score

torch.set_num_threads(1)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_world_images_score_near_perfect(split):
    batch = world.sample(512, seed=11, split=split)
    acc = score(batch.tensors()[0], batch.captions)
    for key in ("object_colour", "background_colour", "shape", "all"):
        assert acc[key] >= 0.99, (key, acc)
    assert acc["n"] == 512


def test_wrong_captions_are_caught():
    batch = world.sample(16, seed=5, split="heldout")
    images = batch.tensors()[0]
    other_shape = [
        world.caption(world.SHAPES[(world.SHAPES.index(s) + 1) % 4], c, b)
        for s, c, b in zip(batch.shapes, batch.colours, batch.backgrounds)
    ]
    swapped = [world.caption(s, b, c) for s, c, b in zip(batch.shapes, batch.colours, batch.backgrounds)]
    j = judge(images, other_shape)
    assert not j["shape_ok"].any() and j["object_colour_ok"].all() and j["background_colour_ok"].all()
    j = judge(images, swapped)
    assert not j["object_colour_ok"].any() and not j["background_colour_ok"].any() and j["shape_ok"].all()
    assert j["object_colour"] == batch.colours and j["background_colour"] == batch.backgrounds  # what is shown


def test_mildly_degraded_images_still_read_correctly():
    batch = world.sample(128, seed=6, split="heldout")
    images = batch.tensors()[0]
    g = torch.Generator().manual_seed(0)
    from pxpo.testbed.segment.augment import gaussian_blur

    noisy = (gaussian_blur(images, g, max_sigma=1.0) + 0.03 * torch.randn(images.shape, generator=g)).clamp(0, 1)
    acc = score(noisy, batch.captions)
    assert acc["all"] >= 0.95, acc


def test_blank_image_has_no_object():
    x = torch.zeros(1, 3, 64, 64) + torch.tensor([30, 60, 220]).view(1, 3, 1, 1) / 255.0
    j = judge(x, ["a red circle on a blue background"])
    assert j["background_colour"] == ["blue"] and j["shape"] == [None] and j["object_colour"] == [None]
    assert not j["all_ok"][0] and j["shape_iou"][0] == 0.0


def test_largest_component_keeps_the_biggest_blob():
    m = np.zeros((2, 12, 12), bool)
    m[0, 1:3, 1:3] = True  # 4 pixels
    m[0, 5:10, 5:8] = True  # 15 pixels
    m[0, 0, 11] = True
    out = largest_component(m)
    assert out[0].sum() == 15 and out[0, 5:10, 5:8].all()
    assert not out[1].any()  # empty stays empty


def test_templates_recover_every_shape():
    kinds = np.arange(4).repeat(3)
    r = np.array([11.0, 16.0, 21.0] * 4, np.float32)
    masks = world.shape_masks(kinds, np.full(12, 30.3, np.float32), np.full(12, 33.1, np.float32), r, 64)
    names, iou = fit_shapes(masks)
    assert names == [world.SHAPES[k] for k in kinds]
    assert (iou > 0.9).all()


def test_heldout_prompts_cover_the_split_evenly():
    combos = world.combinations("heldout")
    prompts = heldout_prompts(3 * len(combos))
    assert sorted(set(prompts)) == sorted(world.caption(*c) for c in combos)
    assert all(prompts.count(p) == 3 for p in set(prompts))


@pytest.mark.slow
def test_evaluate_pipeline_runs_on_a_random_pipeline(random_pipe):
    res = evaluate_pipeline(random_pipe, n=4, steps=2, batch=2, return_images=True)
    assert res["images"].shape == (4, 3, 64, 64) and len(res["prompts"]) == 4
    for key in ("object_colour", "background_colour", "shape", "all"):
        assert 0.0 <= res[key] <= 1.0
    assert res["seconds_per_32"] > 0 and res["n"] == 4


def test_cli_on_a_saved_pipeline(random_pipe_dir, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert main([f"--model={random_pipe_dir}", "--n=2", "--steps=1", "--batch=2", f"--grid={grid}"]) == 0
    out = capsys.readouterr().out
    assert "shape" in out and "seconds per 32" in out and grid.is_file()


def test_cli_missing_model_says_what_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        main([f"--model={tmp_path / 'none'}", "--n=1"])
