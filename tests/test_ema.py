"""train.ema_decay: evaluation, export and the run's end use the moving average of the trained weights;
sampling for training uses the weights as trained."""

import pytest
import torch
from safetensors.torch import load_file

from pxpo.cli import main
from pxpo.config import parse_overrides
from pxpo.training.config import RunConfig
from pxpo.training.trainer import Trainer

TINY = [
    "--epochs=2",
    "--sample.num_steps=4",
    "--sample.batch_size=4",
    "--train.batch_size=4",
    "--eval_samples=4",
    "--eval_every=0",
    "--tensorboard=false",
    "--threads=1",
    "--train.lr=1e-3",
]


def test_a_decay_outside_0_1_names_the_option(tmp_path, capsys):
    assert main(["train", f"--out_dir={tmp_path / 'runs'}", "--train.ema_decay=1"]) == 2
    err = capsys.readouterr().err
    assert "train.ema_decay=1.0: use 0 (no average) or a decay in (0, 1)" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_the_average_follows_diffusers_warm_up_and_serves_evaluation_and_export(tmp_path):
    cfg = parse_overrides(
        RunConfig(),
        [f"--out_dir={tmp_path}", "--run_name=run", *TINY, "--train.ema_decay=0.9"],
        prog="test",
        description="",
    )
    trainer = Trainer(cfg)
    policy = trainer.policy
    live = []  # the weights as trained after each update
    for _ in range(2):
        trainer.epoch()
        live.append([p.detach().clone() for p in policy.params])
    assert not all(torch.equal(a, b) for a, b in zip(*live))  # the two updates moved the weights
    # diffusers' EMAModel warm-up: decay 0 after the first update (the average is those weights),
    # then min(0.9, (1 + 1) / (10 + 1)) = 2/11
    expected = [2 / 11 * a + 9 / 11 * b for a, b in zip(*live)]
    with policy.averaged():
        assert all(torch.allclose(p, e, atol=1e-6) for p, e in zip(policy.params, expected))
        averaged_images, _ = trainer.evaluate()
    assert all(torch.equal(p, b) for p, b in zip(policy.params, live[1]))  # the trained weights are back
    trainer.export_weights()
    exported = load_file(tmp_path / "run" / "weights" / "unet" / "diffusion_pytorch_model.safetensors")
    net = trainer.accel.unwrap_model(trainer.model)
    names = {id(p): n for n, p in net.named_parameters()}
    for p, e in zip(policy.params, expected):
        assert torch.allclose(exported[names[id(p)]].float(), e, atol=1e-6)
    policy.settle()  # the run's end: the average for good
    assert all(torch.allclose(p, e, atol=1e-6) for p, e in zip(policy.params, expected))
    images, _ = trainer.evaluate()
    assert torch.equal(images, averaged_images)
    trainer.folder.release()
