"""The scenes suite's measures: read from pictures with each part taken from the before picture."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pxpo.bench import scene_runs
from pxpo.bench import scene_tables as tables
from pxpo.bench import scenes as suite
from pxpo.testbed import scene_reader, scenes


def _paint(x, mask, rgb):
    colour = torch.tensor(rgb, dtype=x.dtype)[None, :, None, None] / 255
    return torch.where(torch.as_tensor(mask)[:, None], colour.expand_as(x), x)


def test_target_and_locality_measure_what_was_asked_and_nothing_else():
    b = scenes.sample(12, seed=21, split="all")
    before, parts = b.tensors()
    sky = (parts == scenes.SKY).numpy()
    task = suite.get_task("sky-blue")
    after = _paint(before, sky, (30, 60, 220))  # exactly what was asked
    m = suite.measures(task, before, after, b.captions)
    assert m["target_after"] == 1.0 and m["change_out"] == 0.0 and m["locality"] == 0.0
    assert m["target_gain"] == pytest.approx(1.0 - m["target_before"])
    everything = _paint(before, np.ones_like(sky), (30, 60, 220))  # the whole picture blue: not local
    g = suite.measures(task, before, everything, b.captions)
    assert g["target_after"] == 1.0 and g["locality"] > 0.3 and g["parts_after"] < g["parts_before"]


def test_health_counts_only_the_parts_a_task_leaves_alone():
    b = scenes.sample(12, seed=23, split="all")  # captions name every part, the sky's colour too
    before, parts = b.tensors()
    sky = (parts == scenes.SKY).numpy()
    task = suite.get_task("sky-blue-named")
    assert "sky" not in task.kept_items() and "ground" in task.kept_items()
    m = suite.measures(task, before, _paint(before, sky, (30, 60, 220)), b.captions)
    assert m["parts_after"] >= m["parts_before"] - 0.05 and m["healthy"]  # a blue sky is what was asked
    # (not exactly equal: an object already blue merges into a blue sky for the reader)
    ground = (parts == scenes.GROUND).numpy()
    g = suite.measures(task, before, _paint(before, ground, (30, 60, 220)), b.captions)
    assert g["parts_after"] < m["parts_after"] - 0.1 and not g["healthy"]  # the ground was to be kept
    assert set(suite.get_task("remove-small").kept_items()) == {"sky", "ground"}
    assert set(suite.get_task("top-blue").kept_items()) == {"count", "object_shape", "object_size"}


def test_removal_counts_pixels_painted_as_the_background_around_them():
    b = scenes.sample(12, seed=22, split="all")
    before, _ = b.tensors()
    filled = scene_reader.read(before).fill()
    task = suite.get_task("remove-small")
    m = suite.measures(task, before, filled, b.captions)
    small = scene_reader.part_masks("small-objects", scene_reader.read(before))
    if small.any():
        assert m["target_after"] == 1.0 and m["target_before"] < 0.2
    with pytest.raises(ValueError, match="unknown scenes task"):
        suite.get_task("sky-red")


def test_every_task_builds_its_reward_and_prompts():
    import pxpo.testbed  # noqa: F401
    from pxpo.prompts import get_prompts
    from pxpo.rewards.base import get_reward

    for task in [*suite.TASKS.values(), *suite.UNSEEN.values()]:
        o = task.overrides()
        get_reward(o["reward"]["name"], **o["reward"]["params"])
        texts, meta = get_prompts("scenes", **o["prompts"]["params"])(8, np.random.default_rng(0))
        for part, target in task.parts:  # no object already in the target colour; the asked sky/ground unnamed
            assert all(obj["colour"] != target for m in meta for obj in m["objects"]), (task.name, texts)
            if part in ("sky", "ground") and not task.name.endswith("-named"):  # -named: against the caption
                assert all(m[part] is None for m in meta), (task.name, texts)


@pytest.mark.parametrize("variant", list(suite.VARIANTS))
def test_every_variant_is_a_valid_config(variant):
    """A variant's flags parse into pxpo train's config, each to the value it spells (a misspelt key or
    value is refused)."""
    from pxpo.config import parse_overrides
    from pxpo.training.config import RunConfig

    cfg = parse_overrides(RunConfig(), suite.VARIANTS[variant], prog="scenes-suite", description="")
    for flag in suite.VARIANTS[variant]:
        (section, key), value = flag[2:].split("=")[0].split("."), flag.split("=")[1]
        got = getattr(getattr(cfg, section), key)
        assert got == (type(got)(value) if isinstance(got, (int, float)) else value), flag


def test_efficiency_reads_ddpo_at_b_on_the_curve_of_its_3b_run():
    def record(variant, seed, epochs, targets):
        curve = [{"epoch": 5 * i, "queries": 80 * i, "target": t} for i, t in enumerate(targets)]
        return {
            "task": "top-blue",
            "variant": variant,
            "seed": seed,
            "epochs": epochs,
            "curve": curve,
            "final": {"target_gain": targets[-1] - targets[0], "locality": 0.5, "healthy": epochs == 30},
        }

    def row(text):
        return next(line for line in text.splitlines() if line.startswith("| top-blue"))

    px = [record("adaptive", s, 30, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]) for s in (0, 1)]
    dd = [record("ddpo-adaptive", 0, 90, [0.1] + [0.1 + 0.01 * i for i in range(1, 19)])]
    assert tables.gain_at(dd[0], 30) == pytest.approx(0.06) and np.isnan(tables.gain_at(dd[0], 31))
    text = tables.efficiency(px + dd, "adaptive", "ddpo-adaptive")
    assert row(text) == (
        "| top-blue | +0.600 ± 0.000 | +0.060 | +0.180 | ahead | 0.50 ± 0.000 / 0.50 | 2/2 / 0/1 | 2 / 1 |"
    )
    assert text.splitlines()[-1] == (
        "adaptive at B against ddpo-adaptive at 3B on 1 task: ahead on 1 (0 with every run of both healthy), "
        "level on 0, behind on 0."
    )
    tie = [record("ddpo-adaptive", 0, 90, [0.1] * 18 + [0.75])]  # 0.05 apart, within PXPO's std of 0.1
    px[1] = record("adaptive", 1, 30, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9])
    assert "| tie |" in row(tables.efficiency(px + tie, "adaptive", "ddpo-adaptive"))
    no_b = row(tables.efficiency(px + dd, "adaptive", "ddpo-adaptive", ddpo_at_b=False))
    assert no_b.startswith("| top-blue | +0.700 ± 0.100 | - | +0.180 | ahead |")
    assert scene_runs.cache_path(suite.OUT, "top-blue", "ddpo", 1, 90).name == "seed1-e90.json"
    assert scene_runs.run_name("top-blue", "ddpo", 1, 90) == "top-blue-ddpo-s1-e90"
    assert scene_runs.run_name("top-blue", "ddpo", 1) == "top-blue-ddpo-s1"


def test_compare_counts_only_the_task_and_seed_pairs_every_variant_ran():
    def rec(task, variant, seed, gain, healthy, locality=0.5):
        return {
            "task": task,
            "variant": variant,
            "seed": seed,
            "epochs": scene_runs.B_EPOCHS,
            "final": {"target_gain": gain, "healthy": healthy, "locality": locality},
        }

    records = [
        rec("sky-blue", "adaptive", 0, 0.4, 1),
        rec("sky-blue", "adaptive-tight", 0, 0.2, 1, 0.3),
        rec("left-red", "adaptive", 0, 0.3, 0),
        rec("left-red", "adaptive-tight", 0, 0.1, 1),
        rec("top-blue", "adaptive", 0, 0.9, 1),
    ]  # top-blue: one variant only, left out
    lines = tables.compare(records, ["adaptive", "adaptive-tight"]).splitlines()
    assert "runs (2 tasks)" in lines[0]
    assert lines[2] == "| adaptive | 2 | +0.350 | 0.50 | 1/2 | 1/2 |"
    assert lines[3] == "| adaptive-tight | 2 | +0.150 | 0.40 | 2/2 | 1/2 |"  # left-red: healthy, below 0.15


def test_bars_read_the_gain_and_locality_bars_on_both_picture_counts():
    def rec(task, seed, small, large):
        f = [{"target_gain": g, "healthy": h, "locality": loc} for g, h, loc in (small, large)]
        return {
            "task": task,
            "variant": "v",
            "seed": seed,
            "epochs": scene_runs.B_EPOCHS,
            "final": f[0],
            "final_large": f[1],
        }

    records = [
        rec("sky-blue", 0, (0.4, True, 1.1), (0.3, True, 1.0)),
        rec("sky-blue", 1, (0.5, False, 0.9), (0.2, True, 1.0)),  # unhealthy on 16 pictures only
        rec("top-blue", 0, (0.9, True, 0.4), (0.1, True, 0.6)),  # below the bar on 128
        {"task": "left-red", "variant": "v", "seed": 0, "epochs": scene_runs.B_EPOCHS, "final": {}},  # no 128
    ]
    lines = tables.bars(records, "v").splitlines()
    assert [ln.split(" | ")[0] for ln in lines[2:4]] == ["| sky-blue", "| top-blue"]
    assert lines[2].endswith("| 1/2 / 2/2 | no / yes |") and lines[3].endswith("| 1/1 / 1/1 | yes / no |")
    assert "+0.450 ± 0.050 / +0.250 ± 0.050" in lines[2]
    assert (
        lines[-1] == "Gain bar met on 1 of 2 tasks on 16 pictures and 1 on 128; mean locality at most 0.5 on 1 and 0."
    )


def test_remeasure_reads_both_picture_counts_from_the_runs_grids(tmp_path):
    import yaml

    from pxpo.images import make_grid, save

    b = scenes.sample(8, seed=21, split="all")
    before, parts = b.tensors()
    after = _paint(before, (parts == scenes.SKY).numpy(), (30, 60, 220))  # exactly what sky-blue asks
    task = suite.get_task("sky-blue")
    cfg = {"prompts": {"name": "scenes", **task.overrides()["prompts"]}, "eval_seed": 1234}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    for name, x in [
        ("epoch_0000_before", before),
        ("epoch_0030", before),
        ("final_before", before),
        ("final_after", after),
    ]:
        save(make_grid(x, nrow=4, scale=2), tmp_path / "samples" / f"{name}.png")
    record = {"task": "sky-blue", "run_dir": str(tmp_path), "final": {}, "final_large": {"n": 8}}
    out = scene_runs.remeasure(record)
    assert out["final"]["change_in"] == 0.0  # the 16 pictures' grids: the last equals the first
    assert out["final_large"]["n"] == 8 and out["final_large"]["target_after"] == 1.0
    assert out["final_large"]["change_out"] < 0.01 < out["final_large"]["change_in"]


def test_a_long_runs_curve_is_plotted(tmp_path):
    record = {
        "task": "top-blue",
        "variant": "adaptive",
        "seed": 0,
        "epochs": 5 * scene_runs.B_EPOCHS,
        "curve": [{"epoch": e, "target": 0.1 + e / 300} for e in range(0, 151, 5)],
        "final": {"locality": 0.5, "tv_ratio": 0.9, "parts_after": 0.4, "parts_before": 0.41},
    }
    path = tables.plot_curve(record, tmp_path / "c.png")
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", [*suite.TASKS, *suite.UNSEEN])
def test_a_perfect_result_reads_as_target_one_and_fully_local(name):
    from pxpo.bench.scene_ideal import ideal

    m = ideal(name, n=12, seed=0)
    assert m["target_after"] == pytest.approx(1.0) and m["target_before"] < 0.5
    assert m["change_out"] == 0.0 and m["locality"] == 0.0 and m["change_in"] > 0
    assert 0.5 <= m["tv_ratio"] <= 1.5


def test_the_nearest_world_picture_recolours_the_part_under_a_region_and_skips_object_tasks():
    from pxpo.bench.scene_ideal import _recoloured_part, ideal, nearest

    assert nearest("objects-yellow", n=4, seed=0) is None and nearest("remove-small", n=4, seed=0) is None
    assert [_recoloured_part(p, 64) for p in ("top", "top-right", "bottom-left", "ground")] == [
        "sky",
        "sky",
        "ground",
        "ground",
    ]
    assert nearest("sky-blue", n=8, seed=0) == ideal("sky-blue", n=8, seed=0)  # a part: the literal result
    m = nearest("top-blue", n=12, seed=0)  # the horizon varies around the middle: mostly sky, not all
    assert 0.5 < m["target_after"] < 1.0 and 0.0 < m["locality"] < 0.5 and m["healthy"]
    assert m["parts_after"] == m["parts_before"]  # the objects are drawn over the new sky


def test_by_seed_orders_seeds_by_gain_and_names_the_tightest_anchor():
    def rec(task, seed, gain, kl, healthy=True):
        return {
            "task": task,
            "variant": "adaptive",
            "seed": seed,
            "epochs": scene_runs.B_EPOCHS,
            "kl_coef_last": kl,
            "final": {"target_gain": gain, "healthy": healthy},
        }

    records = [
        rec("sky-blue", 0, 0.3, 0.5),
        rec("sky-blue", 1, 0.1, 0.9),
        rec("sky-blue", 2, 0.6, 0.2, False),
        rec("left-red", 0, 0.2, 0.1),
        rec("left-red", 1, 0.1, 0.05),
        rec("top-blue", 0, 0.5, 0.3),
    ]
    lines = tables.by_seed(records, "adaptive").splitlines()
    assert len(lines) == 4  # top-blue has one seed: no row
    assert lines[2] == "| left-red | s1 +0.100 (0.05, healthy); s0 +0.200 (0.1, healthy) | no |"
    assert (
        lines[3]
        == "| sky-blue | s1 +0.100 (0.9, healthy); s0 +0.300 (0.5, healthy); s2 +0.600 (0.2, unhealthy) | yes |"
    )


@pytest.mark.slow
def test_final_pairs_are_the_evaluations_pictures_before_and_after(tmp_path):
    """The final measures on more pictures draw the starting model and the trained one from the same
    captions and noise as the trainer's evaluation: its pictures are the first of each."""
    from pxpo.config import apply_dict, parse_overrides
    from pxpo.training.config import RunConfig
    from pxpo.training.trainer import Trainer

    cfg = RunConfig()
    apply_dict(cfg, suite.get_task("sky-blue-neutral").overrides())
    flags = ["--sample.num_steps=6", "--sample.batch_size=4", "--train.batch_size=4", "--eval_samples=4"]
    flags.append(f"--out_dir={tmp_path}")
    trainer = Trainer(parse_overrides(cfg, [*flags, "--tensorboard=false"], prog="test", description=""))
    uses = trainer.use_reference
    start, _ = trainer.evaluate()
    with torch.no_grad():  # stands in for training: the policy now differs from the starting model
        for p in trainer.policy.params:
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    trained, _ = trainer.evaluate()
    before, after, prompts = scene_runs.paired_pictures(trainer, 6)
    assert before.shape == after.shape == (6, *start.shape[1:]) and len(prompts) == 6
    assert torch.allclose(before[:4], start, atol=1e-4) and torch.allclose(after[:4], trained, atol=1e-4)
    assert (after - before).abs().mean() > 0.01 and trainer.use_reference is uses  # left as it was


@pytest.mark.slow
def test_one_suite_run_trains_measures_and_caches_its_record(tmp_path):
    """One epoch of the recipe on the scenes world's flow model: the record a table reads, cached where
    --table looks, with the final measures on more pictures than the curve's."""
    record = scene_runs.run_one(
        "sky-blue",
        "flow",
        0,
        epochs=1,
        out=tmp_path / "cache",
        runs_dir=str(tmp_path / "runs"),
        eval_every=1,
        final_n=8,
    )
    path = scene_runs.cache_path(tmp_path / "cache", "sky-blue", "flow", 0, epochs=1)
    assert json.loads(path.read_text()) == json.loads(json.dumps(record))
    assert [c["epoch"] for c in record["curve"]] == [0, 1]
    assert record["final_large"]["n"] == 8
    for m in ("final", "final_large"):
        assert {"target_gain", "locality", "tv_ratio", "healthy"} <= set(record[m])
    assert Path(record["run_dir"]).name == "sky-blue-flow-s0-e1"
