"""pxpo refine: strokes files, and a round that changes disliked pixels more than liked ones."""

import numpy as np
import pytest
import torch
from PIL import Image

from pxpo.cli import main
from pxpo.apps.rounds import read_strokes
from pxpo.apps.studio.engine import Engine
from pxpo.apps.studio.store import Store
from pxpo.backends import backbone_for


def test_read_strokes_formats(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[0] = (0, 255, 0, 255)  # liked, full strength
    rgba[1] = (255, 0, 0, 255)  # disliked
    rgba[2] = (200, 40, 40, 51)  # disliked, alpha 0.2
    Image.fromarray(rgba, "RGBA").save(tmp_path / "s.png")
    m = read_strokes(tmp_path / "s.png", 4, 6)
    assert torch.equal(m[0], torch.ones(6)) and torch.equal(m[1], -torch.ones(6))
    assert torch.allclose(m[2], torch.full((6,), -0.2)) and torch.equal(m[3], torch.zeros(6))
    grey = np.array([[128, 255, 0]], np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    assert torch.allclose(read_strokes(tmp_path / "g.png", 1, 3), torch.tensor([[0.0, 1.0, -128 / 127]]).clamp(-1, 1))
    np.save(tmp_path / "n.npy", np.array([[0.5, -2.0]], np.float32))
    assert torch.equal(read_strokes(tmp_path / "n.npy", 1, 2), torch.tensor([[0.5, -1.0]]))
    with pytest.raises(ValueError, match="4x6.*64x64"):
        read_strokes(tmp_path / "s.png", 64, 64)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_strokes(tmp_path / "none.png", 4, 6)


@pytest.mark.slow
def test_a_round_changes_disliked_pixels_more_than_liked_ones(tmp_path, capsys):
    d = tmp_path / "session"
    assert (
        main(["refine", f"--dir={d}", "--prompt=a red square on a blue background", "--seed=3", "--num_steps=10"]) == 0
    )
    assert f"round 0, seed 3: {d / 'pictures' / 'r000_s3.png'}" in capsys.readouterr().out
    store = Store(d)  # the studio's session format
    assert store.meta()["num_steps"] == 10 and store.round(0)["picture_seeds"] == [3]
    strokes = np.zeros((64, 64, 4), np.uint8)
    strokes[:, :32] = (255, 0, 0, 255)  # dislike the left half
    strokes[:, 32:] = (0, 255, 0, 255)  # like the right half
    Image.fromarray(strokes, "RGBA").save(tmp_path / "s0.png")
    assert main(["refine", f"--dir={d}", f"--strokes={tmp_path / 's0.png'}", "--epochs=4", "--variations=8"]) == 0
    assert "round 1 (from 0), seed 3" in capsys.readouterr().out
    for name in ("pictures/r001_s3.png", "compare/r001_s3.png", "weights/round_001.safetensors", "marks/r001_s3.png"):
        assert (d / name).is_file(), name
    r = store.round(1)
    assert (r["parent"], r["status"], r["settings"]["epochs"], r["marked_seeds"]) == (0, "done", 4, [3])
    assert r["changes"][3]["change_disliked"] > 1.5 * r["changes"][3]["change_liked"], r
    assert r["rewards"][-1] > r["rewards"][0], r
    assert store.marks(1)[3][1][0, 0] == -1 and store.marks(1)[3][1][0, -1] == 1
    # the next round starts from round 1's weights: it shows round 1's picture
    assert main(["refine", f"--dir={d}"]) == 0
    assert f"round 1, seed 3: {d / 'pictures' / 'r001_s3.png'}" in capsys.readouterr().out
    engine = Engine(Store(d))  # a session's pictures are redrawn exactly from its stored weights
    for rid in (0, 1):
        assert (engine.draw(rid, 3) - store.read_picture(store.picture_name(rid, 3))).abs().max() <= 0.5 / 255 + 1e-5


def test_refine_user_errors(tmp_path, capsys):
    assert main(["refine", f"--dir={tmp_path / 'none'}", f"--strokes={tmp_path / 's.png'}"]) == 2
    assert "start one first" in capsys.readouterr().err
    assert main(["refine", f"--dir={tmp_path / 'x'}", "--prompt=a red dragon"]) == 2
    assert "dragon" in capsys.readouterr().err
    assert main(["refine", f"--dir={tmp_path / 'x'}", "--variations=1"]) == 2
    assert "--variations=1" in capsys.readouterr().err
    d = tmp_path / "s"
    assert main(["refine", f"--dir={d}", "--num_steps=2", "--threads=1"]) == 0
    for args, words in (
        (["--prompt=a blue circle"], "started with prompt='a red square on a blue background'"),
        (["--round=4"], "no such round (finished rounds: 0)"),
        (["--strokes=none.png"], "does not exist"),
    ):
        assert main(["refine", f"--dir={d}", *args]) == 2
        assert words in capsys.readouterr().err, args
    assert main(["refine", f"--dir={d}", "--seed=5", "--threads=1"]) == 0  # a second picture of round 0
    assert "--seed=5 --strokes=FILE" in capsys.readouterr().out
    assert main(["refine", f"--dir={d}", f"--strokes={tmp_path / 's.npy'}"]) == 2
    assert "seeds 0, 5: choose one with --seed=N" in capsys.readouterr().err


def test_refine_and_studio_refuse_the_same_bad_round_options():
    """One check serves both commands' round options, and says which option to change."""
    from pxpo.apps.refine import RefineConfig
    from pxpo.apps.rounds import check_round_options
    from pxpo.apps.studio import StudioConfig, check as studio_check

    for bad, match in (
        (dict(variations=1), "--variations=1"),
        (dict(kl_coef=-1.0), "--kl_coef=-1.0"),
        (dict(lr=0.0), "--lr=0.0"),
        (dict(eta=0.0), "--eta=0.0"),
        (dict(epochs=0), "--epochs=0"),
        (dict(timestep_fraction=0.0), "--timestep_fraction=0.0"),
        (dict(timestep_fraction=1.5), "--timestep_fraction=1.5"),
    ):
        for cfg, check in ((RefineConfig(**bad), check_round_options), (StudioConfig(**bad), studio_check)):
            with pytest.raises(ValueError, match=match):
                check(cfg)


def test_a_round_trains_the_noisiest_share_of_steps_its_settings_name(random_pipe):
    """timestep_fraction is a round setting: the policy then trains the first (noisiest) steps only,
    and a round recorded before the setting existed trains every step, as it did."""
    from pxpo.apps.refine import RefineConfig
    from pxpo.apps.rounds import round_policy, round_settings, set_round_settings

    policy = round_policy(backbone_for(random_pipe), "full", lr=1e-4, variations=2, num_steps=6, guidance=1.0, eta=1.0)
    assert (policy.n_train_t, policy.t.timestep_order) == (6, "random")
    settings = round_settings(RefineConfig(timestep_fraction=0.5))
    assert settings["timestep_fraction"] == 0.5
    set_round_settings(policy, settings)
    assert (policy.n_train_t, policy.n_chunks, policy.t.timestep_order) == (3, 1, "first")
    old = {k: v for k, v in settings.items() if k != "timestep_fraction"}  # a round saved before the setting
    set_round_settings(policy, old)
    assert (policy.n_train_t, policy.t.timestep_order) == (6, "random")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_a_round_anchors_liked_pixels_to_its_parent_not_to_the_start(random_pipe, mode):
    """The KL reference of a round is the parent round's weights (what the person saw and liked):
    anchored to the session's start, round 2 pulled back what round 1 removed (object area
    0.099 -> 0.348 -> 0.120 on seed 4 of benchmarks/refine.py)."""
    import copy

    from pxpo.apps.rounds import round_policy
    from pxpo.core.trajectory import sample_trajectories, step_gaussian

    pipe = copy.deepcopy(random_pipe)
    policy = round_policy(
        backbone_for(pipe), mode, lr=1e-4, variations=2, num_steps=2, guidance=1.0, eta=1.0, kl_coef=1.0
    )
    traj = sample_trajectories(
        backbone_for(pipe), ["a red circle"] * 2, None, 2, 1.0, 1.0, generator=torch.Generator().manual_seed(0)
    )
    step = traj.transitions(torch.arange(2), torch.zeros(2, dtype=torch.long))

    def means(unet):
        with torch.no_grad():
            return step_gaussian(backbone_for(pipe), step, 0, 1.0, 1.0, model=unet)[0]

    unet = policy.accel.unwrap_model(policy.model)
    with torch.no_grad():  # a finished round: the weights moved away from the start
        for p in policy.params:
            p.add_(0.05 * torch.randn_like(p))
    now = means(unet)  # (outside the context: for LoRA it switches the adapters off)
    with policy.reference_model() as ref:
        assert not torch.allclose(means(ref), now)  # still the start
    policy.anchor_here()
    with policy.reference_model() as ref:
        assert torch.allclose(means(ref), now, atol=1e-6)
    assert torch.equal(means(unet), now)  # the policy itself untouched
