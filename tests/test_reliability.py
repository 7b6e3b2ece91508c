"""Reliability, in process: one clear error for every bad input (before a folder is made or a model
loaded), run folders owned by one run, resume that keeps the run's config, a full disk that leaves
the previous checkpoint intact, and the non-finite guard. (Kills and signals: test_crash_resume.py.)"""

import json
import os
import re
import resource
import shutil
import signal

import pytest
import torch

from pxpo.cli import main
from pxpo.config import parse_overrides
from pxpo.errors import RunStopped, UserError
from pxpo.testbed.plugin import MODELS as NAMED
from pxpo.training.checkpoint import Checkpoints, verify
from pxpo.training.config import RunConfig
from pxpo.training.rundir import RunFolder, default_name, reserve
from pxpo.training.trainer import Trainer

TINY = [
    "--epochs=1",
    "--sample.num_steps=4",
    "--sample.batch_size=4",
    "--train.batch_size=4",
    "--eval_samples=4",
    "--eval_every=0",
    "--tensorboard=false",
    "--threads=1",
]


def tiny(tmp_path, *extra):
    return parse_overrides(
        RunConfig(), [f"--out_dir={tmp_path}", "--run_name=run", *TINY, *extra], prog="test", description=""
    )


def error_of(capsys, *argv) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "option, message",
    [
        ("--train.clip_range=-1", "train.clip_range=-1.0: use 0 (auto"),
        ("--train.batch_size=0", "train.batch_size=0: train on at least 1 trajectory"),
        ("--sample.num_steps=0", "sample.num_steps=0: sample at least 1 DDIM step"),
        ("--sample.batch_size=0", "sample.batch_size=0: sample at least 1 trajectory"),
        ("--sample.num_batches=0", "sample.num_batches=0: sample at least 1 batch"),
        ("--eval_samples=0", "eval_samples=0: evaluate on at least 1 image"),
        ("--threads=0", "threads=0: use at least 1 torch CPU thread"),
        ("--train.max_nonfinite=0", "train.max_nonfinite=0"),
        ("--keep_checkpoints=0", "keep_checkpoints=0"),
        ("--save_every=-1", "save_every=-1"),
        ("--train.kl_loosen_rate=1", "train.kl_loosen_rate=1.0: use a share in [0, 1)"),
    ],
)
def test_bad_values_name_the_option_before_any_folder_is_made(tmp_path, capsys, option, message):
    out = tmp_path / "runs"
    err = error_of(capsys, "train", f"--out_dir={out}", option)
    assert err.startswith("pxpo train: error: ") and message in err
    assert not out.exists()


@pytest.mark.parametrize(
    "error, code", [(UserError("--x=1: use a positive --x"), 2), (ValueError("oops"), 1), (KeyError("oops"), 1)]
)
def test_only_user_errors_are_one_line_a_bug_shows_its_traceback(capsys, monkeypatch, error, code):
    from pxpo import cli

    def command(argv):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "train", (command, ""))
    assert main(["train"]) == code
    err = capsys.readouterr().err
    if code == 2:  # the user's to fix: one line, no traceback
        assert err == "pxpo train: error: --x=1: use a positive --x\n"
    else:  # a bug, though a ValueError: the traceback, and a line asking to report it
        assert "Traceback" in err and err.splitlines()[-1].startswith(
            f"pxpo train: internal error: {type(error).__name__}"
        )
        assert "please report it" in err.splitlines()[-1]


def test_malformed_yaml_names_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\ntrain:\n  lr: [1e-4, 2e-4\n  batch_size: 4\n")
    err = error_of(capsys, "train", f"--config={bad}")
    assert f"{bad}: line 4, column 13: expected ',' or ']'" in err and len(err.splitlines()) == 1


def test_incomplete_pipeline_folder_names_the_missing_component(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    for item in NAMED["shapes-tiny"].iterdir():
        if item.name != "unet":
            (model / item.name).symlink_to(item)
    err = error_of(capsys, "train", f"--out_dir={tmp_path / 'runs'}", f"--model.name={model}")
    assert "is incomplete: model_index.json names unet/" in err and "downloads" not in err
    assert not (tmp_path / "runs").exists()


def test_unwritable_out_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    err = error_of(capsys, "train", f"--out_dir={blocker / 'runs'}")
    assert "is a file, not a folder; choose another --out_dir" in err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        assert "permission denied" in error_of(capsys, "train", f"--out_dir={locked}")


def test_resume_of_nothing_and_a_run_folder_without_weights(tmp_path, capsys):
    assert "no run there" in error_of(capsys, "train", f"--resume={tmp_path / 'nothing'}")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("epochs: 1\n")
    err = error_of(capsys, "train", f"--out_dir={tmp_path}", f"--model.name={tmp_path / 'half'}")
    assert "has no weights/ yet" in err and "--resume=" in err


def test_sample_checks_the_embedded_models_words_before_loading(capsys):
    err = error_of(capsys, "sample", "--prompts=[a cat on a mat]")
    assert "words the embedded model never saw: ['cat', 'mat']" in err
    assert "steps=0" in error_of(capsys, "sample", "--steps=0")


def test_a_user_reward_that_raises_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_rewards.py").write_text("def boom(images, prompts, metadata):\n    return 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["train", f"--out_dir={tmp_path}", *TINY, "--reward.name=my_rewards:boom"]
    err = error_of(capsys, *args, "--run_name=a")
    assert [line for line in err.splitlines() if "boom" in line or "rror" in line] == [
        "pxpo train: error: reward 'my_rewards:boom' raised ZeroDivisionError: division by zero "
        "(--debug shows the traceback)"
    ]
    assert main([*args, "--run_name=b", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "return 1 / 0" in err
    assert err.splitlines()[-1] == (
        "pxpo train: error: reward 'my_rewards:boom' raised ZeroDivisionError: division by zero"
    )


def test_default_names_do_not_collide_and_a_folder_has_one_owner(tmp_path):
    names = {default_name(now=1_700_000_000.123) for _ in range(100)}
    assert len(names) == 100 and all(re.fullmatch(r"2023111[45]-\d{6}\.123-[0-9a-f]{8}", n) for n in names)
    first = reserve(str(tmp_path), "same", "").create()
    with pytest.raises(UserError, match="already exists: choose another --run_name, or continue"):
        reserve(str(tmp_path), "same", "")
    # a race: both passed the early check; exclusive creation lets one win
    with pytest.raises(UserError, match="created by another process a moment ago"):
        RunFolder(tmp_path / "same", resume=False, main=True).create()
    # a live run's folder cannot be resumed by a second process (flock is per open file)
    with pytest.raises(UserError, match=rf"in use by another pxpo process \(pid {os.getpid()}\)"):
        (tmp_path / "same" / "config.yaml").write_text("epochs: 1\n")
        reserve(str(tmp_path), "", str(tmp_path / "same"))
    first.release()
    reserve(str(tmp_path), "", str(tmp_path / "same")).release()  # free once the owner lets go


def test_under_several_processes_every_rank_uses_rank_0s_folder(tmp_path, monkeypatch):
    import accelerate.utils

    class Rank:
        def __init__(self, index):
            self.is_main_process, self.num_processes = index == 0, 2

    chosen = []

    def broadcast(box, from_process=0):  # rank 0's answer reaches the others
        if chosen:
            box[:] = chosen[0]
        else:
            chosen.append(list(box))
        return box

    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", broadcast)
    rank0 = reserve(str(tmp_path), "", "", Rank(0))
    rank1 = reserve(str(tmp_path), "", "", Rank(1))
    assert rank1.path == rank0.path and not rank1.main
    rank1.create()
    assert not rank0.path.exists()  # only rank 0 creates it
    rank0.create().release()
    assert rank0.path.is_dir()


def test_second_run_with_the_same_name_refuses_before_loading(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    err = error_of(capsys, "train", f"--out_dir={tmp_path}", "--run_name=taken")
    assert f"run folder {tmp_path / 'taken'} already exists" in err and "Loading" not in err


@pytest.mark.slow
def test_resume_keeps_the_runs_config_and_counts_from_the_true_start(tmp_path, capsys):
    assert main(["train", f"--out_dir={tmp_path}", "--run_name=r", *TINY, "--train.lr=1e-4"]) == 0
    run = tmp_path / "r"
    first = json.loads((run / "summary.json").read_text())
    capsys.readouterr()
    # only the new epoch count is given: batch 4, 4 steps and lr 1e-4 come from the run's config.yaml
    assert main(["train", f"--resume={run}", "--epochs=2"]) == 0
    out = capsys.readouterr()
    assert "warning: --resume: epochs changes from 1 (saved in config.yaml) to 2" in out.err
    assert "2/2" in out.err and "0/2" not in out.err  # the progress bar starts at epoch 1 of 2
    saved = parse_overrides(RunConfig(), [f"--config={run / 'config.yaml'}"], prog="t", description="")
    assert (saved.sample.batch_size, saved.sample.num_steps, saved.train.lr, saved.epochs) == (4, 4, 1e-4, 2)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_reward_before"] == first["eval_reward_before"]  # the run's original start
    assert "eval reward: " in out.out and "colour_in_region: " in out.out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2] and all(r["skipped_steps"] == 0 for r in rows[1:])
    err = error_of(capsys, "train", f"--resume={run}", "--epochs=3", "--sample.batch_size=8", "--train.algorithm=ddpo")
    assert (
        "cannot change mid-run: sample.batch_size from 4 to 8 (the batch arithmetic); train.algorithm from "
        "'pxpo' to 'ddpo' (the algorithm). Drop those options"
    ) in err
    assert "--model.name=RUN" in error_of(capsys, "train", f"--resume={run}", "--epochs=3", "--run_name=other")
    assert "is finished (epochs=2); to train on, give more with --epochs=N (N > 2)" in error_of(
        capsys, "train", f"--resume={run}"
    )
    # a finished run's weights start a new run: --model.name accepts the run folder
    trainer = Trainer(tiny(tmp_path, f"--model.name={run}", "--run_name=from_run"))
    assert trainer.model_world is not None and trainer.mode == "full"
    from safetensors.torch import load_file

    weights = load_file(run / "weights" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in trainer.pipe.unet.state_dict().items())
    trainer.folder.release()


@pytest.mark.slow
def test_a_run_killed_between_its_last_checkpoint_and_its_summary_is_finished_by_resume(tmp_path, capsys):
    assert main(["train", f"--out_dir={tmp_path}", "--run_name=r", *TINY]) == 0
    run = tmp_path / "r"
    first = json.loads((run / "summary.json").read_text())
    for p in ("summary.json", "before_after.png"):
        (run / p).unlink()
    shutil.rmtree(run / "weights")  # as a kill right after the last checkpoint's rename leaves it
    assert main(["train", f"--resume={run}"]) == 0
    assert json.loads((run / "summary.json").read_text()) == first
    assert (run / "weights" / "model_index.json").is_file() and (run / "before_after.png").is_file()
    capsys.readouterr()
    assert "is finished (epochs=1)" in error_of(capsys, "train", f"--resume={run}")


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path):
    trainer = Trainer(tiny(tmp_path, "--epochs=3"))
    trainer.before = (torch.zeros(1, 3, 8, 8), 0.0, {})
    trainer.save_checkpoint(0)
    ckpts = Checkpoints(trainer.run.path / "checkpoint")
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))  # files stop growing at 1 MB: "disk full"
    try:
        with pytest.raises(UserError) as e:
            trainer.save_checkpoint(1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    message = str(e.value)
    assert "cannot write checkpoint epoch_000002" in message and "File too large" in message
    assert "the previous checkpoint epoch_000001 is intact" in message
    assert f"pxpo train --resume={trainer.run.path}" in message
    assert ckpts.latest().name == "epoch_000001" and verify(ckpts.latest()) is None
    assert sorted(p.name for p in ckpts.root.iterdir()) == ["epoch_000001", "latest"]  # nothing half-written
    trainer.run.close()
    trainer.reward.close()
    trainer.folder.release()


def test_a_write_error_elsewhere_in_a_run_is_one_line(capsys, monkeypatch):
    import errno

    from pxpo import cli

    def full(argv):  # what a full disk raises while a run writes metrics or a grid
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/metrics.jsonl")

    monkeypatch.setitem(cli.COMMANDS, "train", (full, ""))
    err = error_of(capsys, "train")
    assert err == (
        "pxpo train: error: cannot write /runs/x/metrics.jsonl: No space left on device; free disk "
        "space or choose a writable --out_dir (a stopped run continues from its newest checkpoint with "
        "pxpo train --resume=RUN)\n"
    )


@pytest.mark.slow
def test_non_finite_updates_are_skipped_then_the_run_stops_with_a_diagnosis(tmp_path):
    trainer = Trainer(tiny(tmp_path, "--epochs=5", "--train.max_nonfinite=2"))
    start = {k: v.clone() for k, v in trainer.pipe.unet.state_dict().items()}
    trainer.advantages = lambda c: torch.full((len(c.traj), 16, 16), float("nan"))
    with pytest.raises(RunStopped) as e:
        trainer.train()
    assert e.value.exit_code == 1
    message = str(e.value)
    assert "stopped after 2 optimizer updates in a row with non-finite values" in message
    assert "loss was NaN at timestep" in message and "checkpoint after epoch 2" in message
    assert all(torch.equal(start[k], v) for k, v in trainer.pipe.unet.state_dict().items())  # nothing applied
    rows = [json.loads(line) for line in (trainer.run.path / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("skipped_steps") for r in rows] == [None, 1, 1]
    latest = Checkpoints(trainer.run.path / "checkpoint").latest()
    assert latest.name == "epoch_000002" and verify(latest) is None


def test_a_finite_update_resets_the_count():
    from pxpo.training.guards import NonFiniteGuard

    guard = NonFiniteGuard(max_in_row=2)
    t = torch.tensor([981, 21])
    guard.observe(t, loss=torch.tensor(float("inf")), log_prob=torch.zeros(2))
    assert guard.step_ok(sync=False) and not guard.step_ok(sync=True)
    assert guard.diagnosis == "loss was inf at timestep 21, 981"
    guard.observe(t, loss=torch.tensor(0.5), gradient_norm=torch.tensor(1.0))
    assert guard.step_ok() and guard.in_row == 0 and not guard.should_stop
    for _ in range(2):
        guard.observe(t, gradient_norm=torch.tensor(float("nan")))
        guard.step_ok()
    assert guard.should_stop and "gradient_norm was NaN" in guard.diagnosis
    assert guard.epoch_stats() == {"skipped_steps": 3} and guard.epoch_stats() == {"skipped_steps": 0}


class OneProcess:
    """Stands in for accelerate in checkpoint-logic tests: save_state writes one file of known bytes."""

    is_main_process, num_processes = True, 1

    def wait_for_everyone(self):
        pass

    def save_state(self, path):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "model.safetensors"), "wb") as f:
            f.write(os.urandom(4096))


def test_checkpoints_keep_the_newest_k_and_verify_every_byte(tmp_path):
    ckpts = Checkpoints(tmp_path / "checkpoint", keep=2)
    for n in range(1, 5):
        ckpts.save(n, OneProcess(), {"epoch": n - 1}, tmp_path)
    assert sorted(p.name for p in ckpts.root.iterdir()) == ["epoch_000003", "epoch_000004", "latest"]
    assert ckpts.latest().name == "epoch_000004" and verify(ckpts.latest()) is None
    model = ckpts.latest() / "model.safetensors"
    data = bytearray(model.read_bytes())
    data[100] ^= 1  # one flipped bit, same size
    model.write_bytes(bytes(data))
    assert verify(ckpts.latest()) == "model.safetensors does not match its sha256 in the manifest"
    folder, notes = ckpts.find_resumable()
    assert folder.name == "epoch_000003" and "checkpoint epoch_000004 is damaged" in notes[0]
    assert (ckpts.root / ".damaged-epoch_000004").is_dir()
    (folder / "pxpo_state.pt").unlink()
    assert verify(folder) == "pxpo_state.pt is missing"
    (folder / "MANIFEST.json").unlink()
    assert verify(folder) == "no MANIFEST.json (the save did not finish)"
    with pytest.raises(UserError, match="cannot resume: no complete checkpoint"):
        ckpts.find_resumable()


def test_after_a_stop_signal_the_handler_stays_so_a_second_one_still_exits_at_once():
    import signal

    from pxpo.training.signals import StopSignals

    before = signal.getsignal(signal.SIGINT)
    with StopSignals() as quiet:
        assert signal.getsignal(signal.SIGINT) == quiet._handle
    assert signal.getsignal(signal.SIGINT) == before  # no signal: the previous handler comes back
    try:
        with StopSignals() as stopping:
            stopping._handle(signal.SIGINT, None)
            assert stopping.signum == signal.SIGINT
        assert signal.getsignal(signal.SIGINT) == stopping._handle  # winding down: Ctrl-C again exits 130
    finally:
        signal.signal(signal.SIGINT, before)
