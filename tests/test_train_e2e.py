"""End to end on the embedded model: PXPO raises a per-pixel colour reward; the CLI leaves every artefact."""

import json

import pytest
import torch

from pxpo.cli import main
from pxpo.config import parse_overrides
from pxpo.errors import UserError
from pxpo.training.config import RunConfig
from pxpo.training.trainer import Trainer
from pxpo.core.trajectory import step_log_prob


def tiny_config(tmp_path, *extra):
    # the task these tests were written for (the earlier default): left half red on world captions
    return parse_overrides(
        RunConfig(),
        [
            "--prompts.name=shapes-world",
            "--reward.name=colour",
            "--reward.params={target: red, region: left}",
            "--train.kl_coef=0",
            "--train.kl_region=all",
            f"--out_dir={tmp_path}",
            "--run_name=run",
            "--epochs=1",
            "--sample.num_steps=8",
            "--sample.batch_size=8",
            "--sample.num_batches=1",
            "--train.batch_size=8",
            "--eval_samples=8",
            "--tensorboard=false",
            *extra,
        ],
        prog="test",
        description="",
    )


@pytest.mark.slow
def test_pxpo_raises_the_left_half_red_reward_on_fixed_seeds(tmp_path):
    # A few on-policy steps at a larger learning rate than the default: enough to move the reward
    # on fixed evaluation seeds, far too few to reach the collapse seen after ~30 such epochs.
    cfg = tiny_config(
        tmp_path,
        "--epochs=10",
        "--train.lr=1e-4",
        "--eval_every=0",
        "--sample.num_steps=10",
        "--sample.batch_size=16",
        "--train.batch_size=16",
        "--eval_samples=16",
    )
    trainer = Trainer(cfg)
    run = trainer.train()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finetune"] == "full"
    assert summary["eval_reward_after"] > summary["eval_reward_before"] + 0.01, summary


@pytest.mark.slow
def test_on_policy_ratio_in_a_real_training_epoch(tmp_path):
    # every step sampled at eta 1 (the untrained half is deterministic by default and scores 0), so
    # that each of the 8 steps has a log-probability to recompute
    cfg = tiny_config(tmp_path, "--train.objective=clipped", "--sample.untrained_eta=-1")
    trainer = Trainer(cfg)
    c = trainer.collect()
    traj, scalars, maps = c.traj, c.scalars, c.maps
    assert maps.shape == (8, 16, 16) and scalars.shape == (8,)
    j = torch.arange(8)  # a different timestep per sample, as the trainer shuffles them
    with torch.no_grad():
        lp = step_log_prob(trainer.backbone, traj, j, trainer.cfg.sample.guidance, model=trainer.model)
    assert torch.equal(lp, traj.log_probs[torch.arange(8), j])


@pytest.mark.slow
def test_cli_train_one_tiny_epoch_writes_every_artefact(tmp_path, capsys):
    code = main(
        [
            "train",
            f"--out_dir={tmp_path}",
            "--run_name=cli",
            "--epochs=1",
            "--sample.num_steps=4",
            "--sample.batch_size=4",
            "--sample.num_batches=1",
            "--train.batch_size=4",
            "--eval_samples=4",
        ]
    )
    assert code == 0
    run = tmp_path / "cli"
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "before_after.png",
        "reward_curve.png",
        "summary.json",
        "samples/epoch_0000_before.png",
        "samples/epoch_0001.png",
        "weights/model_index.json",
        "weights/unet/diffusion_pytorch_model.safetensors",
        "checkpoint/latest/pxpo_state.pt",
        "checkpoint/latest/MANIFEST.json",
    ):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"reward_mean", "loss", "approx_kl", "clipfrac", "eval_reward"} <= set(rows[-1])
    summary = json.loads((run / "summary.json").read_text())
    # the reward's measure, and the evaluator's reading of the shape and colour the default captions name
    assert (
        set(summary["eval_info_before"])
        == set(summary["eval_info_after"])
        == {"colour_in_region", "evaluator_shape", "evaluator_object_colour"}
    )
    assert "evaluator_shape:" in capsys.readouterr().out
    # the saved pipeline loads with diffusers and samples
    out = tmp_path / "grid.png"
    assert main(["sample", f"--model={run}", f"--out={out}", "--seeds=[0]", "--steps=4"]) == 0
    assert out.is_file()


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["train", f"--out_dir={tmp_path}", "--sample.eta=0"]) == 2
    assert "eta" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                f"--out_dir={tmp_path}",
                "--prompts.name=fixed",
                "--prompts.params={prompt: a red dragon}",
                "--epochs=1",
            ]
        )
        == 2
    )
    assert "dragon" in capsys.readouterr().err
    assert main(["nonsense"]) == 2


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(tmp_path):
    first = Trainer(tiny_config(tmp_path, "--sample.num_steps=4", "--eval_samples=4"))
    run = first.train()
    saved = {k: v.clone() for k, v in first.pipe.unet.state_dict().items()}
    resumed = Trainer(
        tiny_config(tmp_path, "--sample.num_steps=4", "--eval_samples=4", "--epochs=2", f"--resume={run}")
    )
    assert resumed.start_epoch == 1 and resumed.run.path == run  # it continues in the run's own folder
    assert all(torch.equal(saved[k], v) for k, v in resumed.pipe.unet.state_dict().items())
    resumed.train()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "reward_mean" in r] == [1, 2]  # appended, not started over
    assert [r["epoch"] for r in rows if "reward_mean" not in r] == [0]  # the before-evaluation once
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["epoch_000001", "epoch_000002", "latest"]
    with pytest.raises(UserError, match="no run there"):
        Trainer(tiny_config(tmp_path, f"--resume={tmp_path / 'nothing'}"))
