"""Two real processes (torchrun, gloo on the CPU): every rank uses the folder rank 0 chose, the
checkpoint holds both ranks' random states, and a resume continues in that folder."""
import json
import os
import socket
import subprocess
import sys

ARGS = ["--sample.num_steps=4", "--sample.batch_size=2", "--train.batch_size=2", "--eval_samples=4",
        "--eval_every=0", "--save_every=1", "--threads=1", "--tensorboard=false"]


def torchrun(*argv):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={port}", "-m", "pxpo.cli", "train", *argv],
                          capture_output=True, text=True, env=env, timeout=300)


def test_two_processes_share_rank_0s_folder_and_resume_in_it(tmp_path):
    first = torchrun(f"--out_dir={tmp_path}", "--epochs=1", *ARGS)  # a default (timestamped) name
    assert first.returncode == 0, first.stderr
    (run,) = list(tmp_path.iterdir())  # one folder, not one per process
    assert first.stdout.count("run saved in") == 1 and f"run saved in {run}" in first.stdout
    latest = run / "checkpoint" / "latest"
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in latest.iterdir()}
    again = torchrun(f"--resume={run}", "--epochs=2")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("warning: --resume: epochs changes from 1") == 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["epoch_000001", "epoch_000002", "latest"]
