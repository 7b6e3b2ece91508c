"""The efficiency suite: task measures on pictures whose answer is known, and one tiny cached run."""

import json

import pytest
import torch

from pxpo.testbed import world
from pxpo.bench.efficiency import load_cache, main, tag_conflicts
from pxpo.bench.tasks import TASKS, UNSEEN, get_task, measures, target_measure
from pxpo.training.config import TrainConfig


def _paint(images, labels, colour, where):
    rgb = torch.tensor(world.PALETTE[colour], dtype=torch.float32).div(255).view(1, 3, 1, 1)
    return torch.where(where[:, None], rgb.expand_as(images), images)


def test_target_measure_reads_region_colours_on_world_pictures():
    images, labels = world.sample(4, seed=0, combos=[("square", "red", "blue")]).tensors()
    assert target_measure(get_task("bg-blue"), images, images) == 1.0
    assert target_measure(get_task("object-yellow"), images, images) == 0.0
    yellow = _paint(images, labels, "yellow", labels > 0)
    assert target_measure(get_task("object-yellow"), yellow, images) == 1.0
    left = images.clone()
    left[..., :32] = torch.tensor(world.PALETTE["red"]).float().div(255).view(3, 1, 1)
    two = target_measure(get_task("left-red-right-blue"), left, images)
    assert 0.5 < two < 1.0  # left all red; right blue except where the square reaches into it


def test_measures_locality_health_and_no_credit_for_moving_the_boundary():
    images, labels = world.sample(4, seed=1, combos=[("circle", "white", "red")]).tensors()
    prompts = [world.caption("circle", "white", "red")] * 4
    same = measures(get_task("bg-blue"), images, images, prompts)
    assert same["target_gain"] == 0 and same["change_in"] == same["change_out"] == 0
    assert same["shape_kept"] == 1.0 and same["shape_acc_after"] == 1.0 and same["healthy"]
    blue_bg = _paint(images, labels, "blue", labels == 0)
    m = measures(get_task("bg-blue"), images, blue_bg, prompts)
    # the background is read by the shipped segmenter (exact up to a boundary pixel or two)
    assert m["target_gain"] > 0.99 and m["change_out"] < 0.01 and m["locality"] < 0.01 and m["healthy"]
    # painting the object out too: the background of the *before* picture decides, so no extra gain,
    # and the change on the object shows up as change outside the region
    gone = _paint(images, labels, "blue", torch.ones_like(labels, dtype=torch.bool))
    g = measures(get_task("bg-blue"), images, gone, prompts)
    assert g["target_gain"] > 0.99 and g["locality"] > 0.5 and g["shape_kept"] == 0 and not g["healthy"]
    noisy = (images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert measures(get_task("top-blue"), images, noisy, prompts)["tv_ratio"] > 1.5
    shrink = measures(get_task("shrink-named"), images, _paint(images, labels, "red", labels > 0), prompts)
    assert shrink["target_gain"] > 0.05  # object share fell: a gain for a shrink task


def test_suite_covers_the_asked_task_kinds():
    kinds = {t.parts[0][0] if t.parts else t.measure for t in TASKS.values()}
    assert {"background", "object", "top", "top-left"} <= kinds and "object-share" in kinds
    assert any(len(t.parts) == 2 for t in TASKS.values())  # a two-sided map
    assert {t.captions for t in TASKS.values()} == {"open", "named", "partial"}
    assert not set(TASKS) & set(UNSEEN)


@pytest.mark.slow
def test_a_tiny_suite_run_is_cached_and_reported(tmp_path):
    small = ["sample.num_steps=3", "sample.batch_size=4", "train.batch_size=4", "sample.group_size=2", "eval_samples=4"]
    args = [
        "--tasks",
        "top-blue",
        "--methods",
        "ddpo",
        "pxpo-clipped",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--eval-every",
        "1",
        "--ddpo-budget",
        "2",
        "--threads",
        "1",
        "--out",
        str(tmp_path / "cache"),
        "--doc",
        str(tmp_path / "eff.md"),
        "--runs",
        str(tmp_path / "runs"),
        "--set",
        *small,
    ]
    assert main(args) == 0
    records = load_cache(tmp_path / "cache")
    assert sorted((r["method"], r["epochs"]) for r in records) == [("ddpo", 2), ("pxpo-clipped", 1)]
    ddpo = next(r for r in records if r["method"] == "ddpo")
    assert [c["queries"] for c in ddpo["curve"]] == [0, 4, 8]
    assert {"target_gain", "locality", "shape_kept", "tv_ratio", "healthy"} <= set(ddpo["final"])
    doc = (tmp_path / "eff.md").read_text()
    assert "| top-blue | open | pxpo-clipped | 1 |" in doc and "eff/top-blue.png" in doc
    assert (tmp_path / "eff" / "top-blue.png").is_file()
    assert "**top-blue**" in doc  # the efficiency verdict line
    json.dumps(records)  # the cache is plain JSON


@pytest.mark.slow
def test_learning_rates_come_from_a_sweep_on_the_tuning_seed(tmp_path):
    small = ["sample.num_steps=3", "sample.batch_size=4", "train.batch_size=4", "eval_samples=4"]
    args = [
        "--tasks",
        "top-blue",
        "--methods",
        "pxpo-sf",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--eval-every",
        "1",
        "--threads",
        "1",
        "--out",
        str(tmp_path / "cache"),
        "--doc",
        str(tmp_path / "eff.md"),
        "--runs",
        str(tmp_path / "runs"),
        "--sweep-lr",
        "1e-5",
        "3e-4",
        "--tune-seed",
        "7",
        "--set",
        *small,
    ]
    assert main(args) == 0
    chosen = json.loads((tmp_path / "cache" / "lr.json").read_text())["pxpo-sf"]
    assert chosen in (1e-5, 3e-4)
    tuned = load_cache(tmp_path / "cache" / "tune")
    assert sorted(r["tag"] for r in tuned) == ["lr0.0003", "lr1e-05"]
    assert all(r["seed"] == 7 for r in tuned)
    (reported,) = load_cache(tmp_path / "cache")  # the tuning runs are not in the report's cache
    assert reported["seed"] == 0 and f"--train.lr={chosen}" in reported["extra"]
    page = (tmp_path / "eff.md").read_text()  # the page shows the sweep apart, with its choice
    assert "## Learning rates: a sweep on a tuning seed" in page and f"pxpo-sf **{chosen:g}**" in page
    assert sum(line.startswith("| pxpo-sf | ") for line in page.splitlines()) == 2 and "| top-blue | 7 |" in page
    # no reported seeds: only the sweep (here cached, so nothing trains) and the page
    assert main([*args[: args.index("--seeds") + 1], *args[args.index("--seeds") + 2 :]]) == 0
    assert len(load_cache(tmp_path / "cache")) == 1 and len(load_cache(tmp_path / "cache" / "tune")) == 2


def test_a_tag_names_one_recipe(tmp_path):
    """A variant's runs must share its --set: a tagged run launched without it is refused before it
    trains, with the cached runs named; the model folder and the tuned lr written out do not count."""
    cache = tmp_path / "cache" / "top-blue" / "ddpo@half"
    cache.mkdir(parents=True)
    made = [f"--train.lr={TrainConfig().lr}", "--train.timestep_fraction=0.5", "--model.name=runs/x"]
    (cache / "seed0.json").write_text(json.dumps({"method": "ddpo", "extra": made}))
    assert tag_conflicts(tmp_path / "cache", "half", ["--train.timestep_fraction=0.50"], {}) == []
    assert tag_conflicts(tmp_path / "cache", "half", ["--train.timestep_fraction=0.5", "--train.lr=5e-4"], {})
    assert tag_conflicts(tmp_path / "cache", "", [], {}) == []  # the untagged legacy cache is not checked
    args = [
        "--tasks",
        "top-blue",
        "--methods",
        "pxpo-clipped",
        "--seeds",
        "1",
        "--tag",
        "half",
        "--out",
        str(tmp_path / "cache"),
        "--doc",
        str(tmp_path / "eff.md"),
        "--runs",
        str(tmp_path / "runs"),
    ]
    with pytest.raises(SystemExit):
        main(args)
    assert not (tmp_path / "runs").exists()  # refused before training


def test_read_grid_inverts_make_grid(tmp_path):
    from pxpo.images import make_grid, read_grid, save

    images, _ = world.sample(5, seed=2).tensors()
    save(make_grid(images, nrow=3, scale=2), tmp_path / "g.png")
    back = read_grid(tmp_path / "g.png")
    assert back.shape == (6, 3, 64, 64)  # the empty sixth cell reads as white padding
    assert torch.allclose(back[:5], images, atol=1 / 255)


def test_verdicts_judge_three_seeds_and_fail_a_gain_within_its_spread():
    from pxpo.bench.summary import verdicts

    def row(task, method, gains, end=(), healthy=3):
        return {
            "task": task,
            "method": method,
            "gain_B": list(gains),
            "gain_end": list(end),
            "healthy": healthy,
            "seeds": len(gains),
        }

    rows = [
        row("a", "pxpo-clipped", [0.4, 0.5, 0.45]),
        row("a", "ddpo", [0.1, 0.2, 0.1], [0.3, 0.4, 0.35]),
        row("b", "pxpo-clipped", [0.01, -0.01, 0.0]),  # no DDPO: within its spread, so no
        row("c", "pxpo-clipped", [0.3, 0.3, 0.3]),  # no DDPO, but a real gain: not judged
        row("d", "pxpo-clipped", [0.3]),
        row("d", "ddpo", [0.0], [0.1]),  # one seed: not judged
        row("e", "pxpo-clipped", [0.1, 0.1, 0.1]),
        row("e", "pxpo-clipped@variant", [0.9, 0.9, 0.9]),
        row("e", "ddpo", [0.1, 0.2, 0.1], [0.3, 0.4, 0.35]),
    ]  # a tagged variant is not the recipe
    v = verdicts(rows)
    assert v["a"].startswith("yes") and v["b"].startswith("no") and "c" not in v
    assert v["d"].startswith("not judged")
    assert v["e"].startswith("no: pxpo-clipped +0.100")
    # a variant run by both methods is judged apart, each side with the variant's runs only
    rows += [
        row("e", "ddpo@variant", [0.5, 0.5, 0.5], [1.0, 1.0, 0.95]),
        row("f", "pxpo-clipped@variant", [0.2, -0.1, 0.0]),  # not positive beyond its spread: no, DDPO or not
        row("g", "pxpo-clipped@variant", [0.2, 0.2, 0.2]),
    ]  # no DDPO on the variant: not judged
    tagged = verdicts(rows, "variant")
    assert set(tagged) == {"e", "f"} and tagged["e"].startswith(
        "no: pxpo-clipped@variant +0.900 at B against DDPO +0.983"
    )
    assert tagged["f"].startswith("no: PXPO's best gain at B") and "DDPO not run" in tagged["f"]
    assert verdicts(rows)["e"] == v["e"]


@pytest.mark.slow
def test_decoder_floor_separates_the_decoders_spread_from_change_outside_the_region():
    from pxpo.bench.floor import decoder_floor
    from pxpo.backends.registry import load_pipeline

    torch.set_num_threads(2)
    vae = load_pipeline("shapes-tiny").vae
    images, labels = world.sample(4, seed=2, combos=[("square", "white", "red")]).tensors()
    task = get_task("bg-blue")
    local = decoder_floor(vae, task, images, _paint(images, labels, "blue", labels == 0))
    everywhere = decoder_floor(
        vae, task, images, _paint(images, labels, "blue", torch.ones_like(labels, dtype=torch.bool))
    )
    # painting only the background: the run is about as local as the decoder allows
    assert abs(local["locality_vae"] - local["locality_floor"]) < 0.1
    # painting the object too: the run's locality is high, and the floor (object latents kept) is far below it
    assert everywhere["locality_vae"] > 0.8 and everywhere["locality_floor"] < 0.6 * everywhere["locality_vae"]
    assert abs(everywhere["floor_change_in"] - everywhere["change_in_vae"]) < 0.1 * everywhere["change_in_vae"]
    with pytest.raises(ValueError, match="no region"):
        decoder_floor(vae, get_task("shrink-named"), images, images)


@pytest.mark.slow
def test_the_flow_suite_runs_each_design_and_grpo_on_a_flow_model(tmp_path):
    from pxpo.bench.flow import main as flow_main
    from pxpo.testbed.pretrain.run import PretrainConfig, pretrain

    threads = torch.get_num_threads()
    model = pretrain(
        PretrainConfig(
            out=str(tmp_path / "flow"),
            family="flow",
            init="shapes-parts",
            unet_steps=1,
            unet_batch=2,
            sample_every=0,
            threads=1,
        )
    )
    small = ["sample.num_steps=3", "sample.batch_size=4", "train.batch_size=4", "eval_samples=4"]
    args = [
        "--tasks",
        "bg-blue-parts",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--eval-every",
        "1",
        "--threads",
        "1",
        "--model",
        str(model),
        "--out",
        str(tmp_path / "cache"),
        "--runs",
        str(tmp_path / "runs"),
        "--set",
        *small,
    ]
    try:
        assert flow_main(args) == 0
    finally:
        torch.set_num_threads(threads)
    records = load_cache(tmp_path / "cache")
    assert sorted((r["method"], r["epochs"]) for r in records) == [
        ("detached", 1),
        ("grpo", 3),
        ("mask", 1),
        ("pixel", 1),
    ]
    for r in records:
        assert "--model.name=" + str(model) in r["extra"] and {"target_gain", "tv_ratio"} <= set(r["final"])
    config = (tmp_path / "runs" / "bg-blue-parts-grpo-s0" / "config.yaml").read_text()
    assert "group_size: 4" in config and "algorithm: ddpo" in config
