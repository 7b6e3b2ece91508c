"""Crashes and signals, with real processes: SIGKILL at random moments during checkpoint saves, then
resume, must give bit for bit the weights and metrics of a straight run (or fall back to the previous
checkpoint, saying so); Ctrl-C and SIGTERM stop with a checkpoint, the resume command and exit
130 / 143; a second Ctrl-C exits at once."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pxpo.training.checkpoint import Checkpoints, verify

pytestmark = pytest.mark.slow  # kills and resumes real training runs

ARGS = [
    "--epochs=4",
    "--sample.num_steps=4",
    "--sample.batch_size=4",
    "--train.batch_size=4",
    "--eval_samples=4",
    "--eval_every=0",
    "--save_every=1",
    "--threads=1",
    "--tensorboard=false",
]


def pxpo(*argv, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "pxpo.cli", "train", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=240)
    return proc.returncode, out, err


def wait_for(predicate, timeout=120.0, every=0.0005):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


def weights(run: Path) -> dict:
    return load_file(run / "weights" / "unet" / "diffusion_pytorch_model.safetensors")


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time")} for r in rows]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    code, _, err = finish(pxpo(f"--out_dir={out}", "--run_name=straight", *ARGS))
    assert code == 0, err
    return out / "straight"


def test_sigkill_during_saves_then_resume_matches_a_straight_run(straight, tmp_path):
    rng = random.Random(0)
    reference_weights, reference_metrics = weights(straight), metrics(straight)
    for k, save in enumerate([2, 3, 4]):  # kill during the save after epoch 2, 3, 4
        run = tmp_path / f"killed{k}"
        ckpt = run / "checkpoint"
        proc = pxpo(f"--out_dir={tmp_path}", f"--run_name=killed{k}", *ARGS)
        began = wait_for(lambda: (ckpt / f".incomplete-epoch_{save:06d}").exists() or proc.poll() is not None)  # noqa: B023
        assert began and proc.poll() is None, "the run ended before the save it was to be killed in"
        # a save takes ~0.1-0.25 s here: the first kill lands inside accelerate's save_state, the others
        # anywhere in it, the manifest, the rename or the weights/ export
        time.sleep(rng.uniform(0.0, 0.02) if k == 0 else rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        interrupted = any(p.name.startswith(".incomplete-") for p in ckpt.iterdir())
        assert interrupted or k > 0, "the first kill was meant to land mid-save"
        latest = Checkpoints(ckpt).latest()
        assert latest is not None and verify(latest) is None  # what the kill left is complete
        assert latest.name in (f"epoch_{save - 1:06d}", f"epoch_{save:06d}")
        if k == 2:  # and a damaged newest checkpoint (a 0-byte optimizer.bin): fall back to the one before
            (latest / "optimizer.bin").write_bytes(b"")
        code, out, err = finish(pxpo(f"--resume={run}"))
        assert code == 0, err
        if interrupted:
            assert "a checkpoint save that did not finish" in err
        if k == 2:
            assert f"checkpoint {latest.name} is damaged (optimizer.bin has 0 bytes" in err
            assert "falling back to the newest complete checkpoint before it" in err
        got = weights(run)
        assert all(torch.equal(reference_weights[n], got[n]) for n in reference_weights), f"kill {k}: weights differ"
        assert metrics(run) == reference_metrics, f"kill {k}: metrics differ"
        assert json.loads((run / "summary.json").read_text()) == json.loads((straight / "summary.json").read_text())
        names = sorted(p.name for p in ckpt.iterdir() if not p.name.startswith(".damaged-"))
        assert names == ["epoch_000003", "epoch_000004", "latest"]


def started(run: Path) -> bool:
    path = run / "metrics.jsonl"
    return path.is_file() and "reward_mean" in path.read_text()


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_after_the_epoch_with_a_checkpoint_and_the_resume_command(tmp_path, signum, code):
    run = tmp_path / "run"
    proc = pxpo(f"--out_dir={tmp_path}", "--run_name=run", *ARGS, "--epochs=50", "--save_every=0")
    assert wait_for(lambda: started(run) or proc.poll() is not None, every=0.05) and proc.poll() is None
    proc.send_signal(signum)
    got, out, err = finish(proc)
    assert got == code, err
    assert "Traceback" not in err and f"pxpo train --resume={run}" in err
    latest = Checkpoints(run / "checkpoint").latest()
    done = len([r for r in metrics(run) if "reward_mean" in r])
    assert verify(latest) is None and latest.name == f"epoch_{done:06d}"  # the epoch in progress finished
    assert f"stopped by {'Ctrl-C (SIGINT)' if signum == signal.SIGINT else 'SIGTERM'} after epoch {done} of 50" in err


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    run = tmp_path / "run"
    proc = pxpo(
        f"--out_dir={tmp_path}",
        "--run_name=run",
        *ARGS,
        "--epochs=50",
        "--save_every=0",
        "--sample.batch_size=16",
        "--train.batch_size=16",
    )
    assert wait_for(lambda: started(run) or proc.poll() is not None, every=0.05) and proc.poll() is None
    proc.send_signal(signal.SIGINT)
    assert wait_for(lambda: proc.poll() is not None, timeout=0.3, every=0.01) is False  # still finishing
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    got, _, err = finish(proc)
    assert got == 130 and time.time() - t0 < 2, err
    assert "Ctrl-C (SIGINT) again: exiting now" in err and "Traceback" not in err
