"""Partial captions ("a red circle"): parsed, drawn by the prompt source, judged by the evaluator
on the parts they name, and the shipped model that draws them (shapes-parts, pxpo train's default)."""

import numpy as np
import pytest

from pxpo.testbed import world
from pxpo.bench.tasks import TASKS, UNSEEN
from pxpo.testbed.evaluate import caption_accuracy, score
from pxpo.backends.registry import is_embedded, resolve_model
from pxpo.testbed.plugin import MODELS as NAMED
from pxpo.prompts import get_prompts
from pxpo.training.config import RunConfig


@pytest.mark.parametrize(
    "parts",
    [
        ("circle", "red", None),
        ("circle", None, None),
        (None, "red", None),
        (None, None, "blue"),
        ("cross", "black", "white"),
        ("square", None, "green"),
        (None, "cyan", "yellow"),
        (None, None, None),
    ],
)
def test_partial_captions_round_trip(parts):
    text = world.partial_caption(*parts)
    assert world.parse_partial_caption(text) == parts
    if None not in parts:
        assert world.parse_partial_caption(text) == world.parse_caption(text)


@pytest.mark.parametrize(
    "text, says",
    [
        ("a pink circle", "colour one of"),
        ("a circle red", "shape one of"),
        ("the red circle", "expected"),
        ("a red circle on blue background", "background"),
        ("a red circle blue", "expected"),
    ],
)
def test_bad_partial_captions_say_what_is_expected(text, says):
    with pytest.raises(ValueError, match=says):
        world.parse_partial_caption(text)


def test_score_counts_each_part_over_the_captions_that_name_it():
    batch = world.sample(16, seed=3, split="train")
    images = batch.tensors()[0]
    # shape named right on the first half, wrong on the second; colours left open throughout
    shapes = [s if i < 8 else world.SHAPES[(world.SHAPES.index(s) + 1) % 4] for i, s in enumerate(batch.shapes)]
    acc = score(images, [world.partial_caption(s, None, None) for s in shapes])
    assert acc["shape"] == 0.5 and acc["object_colour"] is None and acc["background_colour"] is None
    assert acc["all"] == 0.5
    # "a red circle": colour and shape judged, the background never
    acc = score(images, [world.partial_caption(s, c, None) for s, c in zip(batch.shapes, batch.colours)])
    assert acc["shape"] == 1.0 and acc["object_colour"] == 1.0 and acc["background_colour"] is None
    whole = score(images, batch.captions)  # whole captions: every part, as before
    assert whole["shape"] == whole["object_colour"] == whole["background_colour"] == 1.0
    assert caption_accuracy(
        images, [world.partial_caption(s, c, None) for s, c in zip(batch.shapes, batch.colours)]
    ) == {"evaluator_shape": 1.0, "evaluator_object_colour": 1.0}
    assert caption_accuracy(images, [""] * 16) == {}  # nothing named: nothing to judge
    assert caption_accuracy(images, ["a cat"] * 16) == {}  # not the shapes world


def test_shapes_world_source_names_only_the_asked_parts_and_leaves_colours_out():
    src = get_prompts("shapes-world", parts=["colour", "shape"], exclude_colours=["blue"])
    prompts, meta = src(400, np.random.default_rng(0))
    parsed = [world.parse_partial_caption(p) for p in prompts]
    assert all(b is None and s in world.SHAPES and c in world.COLOURS and c != "blue" for s, c, b in parsed)
    assert len(set(prompts)) == 28  # 4 shapes x 7 colours, each drawn
    assert meta[0] == dict(zip(("shape", "colour", "background"), parsed[0]))
    # whole captions: the same draws as before parts existed (seeded runs stay reproducible)
    whole, _ = get_prompts("shapes-world")(3, np.random.default_rng(0))
    pool = world.combinations("train")
    assert whole == [world.caption(*pool[i]) for i in np.random.default_rng(0).integers(0, len(pool), size=3)]
    with pytest.raises(ValueError, match="subset of shape, colour, background"):
        get_prompts("shapes-world", parts=["size"])
    with pytest.raises(ValueError, match="colours are"):
        get_prompts("shapes-world", exclude_colours=["pink"])
    with pytest.raises(ValueError, match="exclude fewer"):
        get_prompts("shapes-world", exclude_colours=list(world.COLOURS))


def test_shapes_parts_is_shipped_embedded_and_the_default():
    path = resolve_model("shapes-parts")
    assert path == str(NAMED["shapes-parts"]) and is_embedded("shapes-parts") and is_embedded(path)
    log = (NAMED["shapes-parts"] / "pretrain_log.json").read_text()
    assert "--part_dropout=0.3" in log and "--init=shapes-tiny" in log  # how to make it again
    cfg = RunConfig()
    assert cfg.model.name == "shapes-parts"
    prompts, _ = get_prompts(cfg.prompts.name, **cfg.prompts.params)(16, np.random.default_rng(cfg.eval_seed))
    world.check_vocabulary(prompts)
    assert all(world.parse_partial_caption(p)[2] is None for p in prompts)  # background left open


def test_the_suite_stays_on_the_model_its_cache_was_made_on():
    for task in [*TASKS.values(), *UNSEEN.values()]:
        if not task.name.endswith("-parts"):
            assert task.overrides()["model"] == {"name": "shapes-tiny"}
    default = RunConfig()  # the default run's task is the suite's bg-blue-parts, setting for setting
    parts = TASKS["bg-blue-parts"].overrides()
    assert parts["model"]["name"] == default.model.name and parts["prompts"]["params"] == default.prompts.params
    assert parts["reward"]["params"] == default.reward.params and TASKS["bg-blue-parts"].captions == "partial"


def test_evaluate_can_caption_with_only_some_parts():
    from pxpo.testbed.evaluate import heldout_prompts

    prompts = heldout_prompts(64, "all", ["colour", "shape"])
    assert len(set(prompts)) == 32 and all(world.parse_partial_caption(p)[2] is None for p in prompts)
    assert heldout_prompts(3) == heldout_prompts(3, "heldout", ["shape", "colour", "background"])  # unchanged
    with pytest.raises(ValueError, match="subset of shape, colour, background"):
        heldout_prompts(4, "all", ["size"])


def test_evaluate_leaves_out_the_colours_a_run_trained_without():
    from pxpo.testbed.evaluate import heldout_prompts

    prompts = heldout_prompts(56, "all", ["colour", "shape"], exclude_colours=["blue"])
    assert len(set(prompts)) == 28 and not any(world.parse_partial_caption(p)[1] == "blue" for p in prompts)
    with pytest.raises(ValueError, match="'navy' is not a colour"):
        heldout_prompts(4, "all", ["colour", "shape"], exclude_colours=["navy"])
    with pytest.raises(ValueError, match="leaves no caption"):
        heldout_prompts(4, "all", ["colour"], exclude_colours=list(world.COLOURS))
