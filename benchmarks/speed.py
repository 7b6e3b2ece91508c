"""An epoch of ``pxpo train`` against the UNet's own time for the same work: the overhead ratio.

    python benchmarks/speed.py [--repeats=3] [--threads=2] [--algorithms=pxpo,ddpo] [--json=PATH] [KEY=VALUE ...]

For each algorithm (PXPO and DDPO; every other setting is ``pxpo train``'s default on the embedded
model, or the ``KEY=VALUE`` overrides, e.g. ``model.finetune=lora``) it builds the real trainer and
times whole epochs as ``pxpo train`` runs them: sampling with rewards (``Trainer.collect``, with the
reference pass when the reward reads one), advantages, and the policy update (``Policy.update``).
After one warm-up epoch each, the algorithms alternate, ``repeats`` rounds, so that the load other
jobs put on the machine falls on both alike.

The UNet floor is the same UNet work done alone, in the epoch's order, on random inputs of the
same shapes, timed once per round right after the epochs (the algorithms share it: their UNet work
is the same):

    sampling  = passes * num_batches * num_steps      forwards  (no grad) at batch 2 * sample.batch_size
    training  = inner_epochs * minibatches * n_train_t forward + backward at batch 2 * train.batch_size
              + as many no-grad reference forwards when the KL anchor is on
    overhead  = epoch wall time / floor

(batch 2x: classifier-free guidance runs the conditional and unconditional halves in one call;
``passes`` is 2 when reference pictures are drawn). One call per trained timestep is how DDPO's and
trl's trainers run the UNet; an update that batches timesteps, or that reuses the sampling pass's
calls (``train.reuse_sampling``: no trained forward of its own), can go below the floor.

Peak memory: the process's resident set size, polled every 5 ms during the epoch (CPU), or
``torch.cuda.max_memory_allocated`` (GPU). Prints a table and writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch


class PeakMemory:
    """Peak memory inside a ``with`` block: RSS polled in a thread (CPU) or CUDA's allocator peak (GPU)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.peak = 0

    def __enter__(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return self
        import psutil

        proc, self._stop = psutil.Process(), threading.Event()

        def poll():
            while not self._stop.is_set():
                self.peak = max(self.peak, proc.memory_info().rss)
                self._stop.wait(0.005)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build_trainer(algorithm: str, overrides: list[str], threads: int, out_dir: str):
    from pxpo.config import parse_overrides
    from pxpo.training.config import RunConfig
    from pxpo.training.trainer import Trainer

    cfg = RunConfig()
    for item in overrides:
        if "=" not in item:
            raise SystemExit(f"speed.py: override {item!r} is not KEY=VALUE (e.g. model.finetune=lora)")
    parse_overrides(cfg, ["--" + item.lstrip("-") for item in overrides], prog="speed.py", description="")
    cfg.train.algorithm, cfg.threads, cfg.out_dir = algorithm, threads, out_dir
    cfg.run_name, cfg.tensorboard = f"speed-{algorithm}", False
    return Trainer(cfg)


def epoch(trainer) -> dict:
    """One epoch as ``Trainer._train`` runs it, without evaluation and logging: times in seconds."""
    dev = trainer.accel.device
    sync(dev)
    t0 = time.perf_counter()
    c = trainer.collect()
    adv = trainer.advantages(c)
    sync(dev)
    t1 = time.perf_counter()
    trainer.policy.update(c.traj, adv, trainer.gen, holds=c.holds)
    sync(dev)
    t2 = time.perf_counter()
    return {"epoch_s": t2 - t0, "sample_s": t1 - t0, "train_s": t2 - t1}


def unet_work(trainer) -> dict:
    """How many UNet calls of which batch an epoch of ``trainer`` makes (see the module doc)."""
    cfg, policy = trainer.cfg, trainer.policy
    s, t = cfg.sample, cfg.train
    cfg_mult = 2 if s.guidance != 1.0 else 1
    n = s.batch_size * s.num_batches
    minibatches = math.ceil(n / t.batch_size)
    use_kl = t.kl_coef > 0  # the KL holds the reward's hold maps, a fixed region, or every pixel
    trained = t.inner_epochs * minibatches * policy.n_train_t
    return {
        "sample_forwards": (2 if trainer.use_reference else 1) * s.num_batches * s.num_steps,
        "sample_batch": cfg_mult * s.batch_size,
        "train_forward_backwards": trained,
        "train_batch": cfg_mult * min(t.batch_size, n),
        "kl_forwards": trained if use_kl else 0,
    }


def unet_floor(trainer, work: dict) -> dict:
    """Make an epoch's UNet calls alone, in the epoch's order and shapes, on random latents, timesteps
    and prompt embeddings; times in seconds."""
    unet = trainer.accel.unwrap_model(trainer.model)
    pipe, dev = trainer.pipe, trainer.accel.device
    c, (h, w) = unet.config.in_channels, trainer.latent_hw
    emb_len, emb_dim = pipe.tokenizer.model_max_length, unet.config.cross_attention_dim

    def inputs(b: int):
        return (
            torch.randn(b, c, h, w, device=dev, dtype=unet.dtype),
            torch.randint(0, 1000, (b,), device=dev),
            torch.randn(b, emb_len, emb_dim, device=dev, dtype=unet.dtype),
        )

    sample_in, train_in = inputs(work["sample_batch"]), inputs(work["train_batch"])
    sync(dev)
    t0 = time.perf_counter()
    with torch.no_grad(), trainer.accel.autocast():
        for _ in range(work["sample_forwards"]):
            _ = unet(*sample_in).sample
    sync(dev)
    t1 = time.perf_counter()
    for i in range(work["train_forward_backwards"]):
        with trainer.accel.autocast():
            if i < work["kl_forwards"]:
                with torch.no_grad():
                    _ = unet(*train_in).sample
            unet(*train_in).sample.float().square().mean().backward()
    sync(dev)
    t2 = time.perf_counter()
    unet.zero_grad(set_to_none=True)
    return {"floor_sample_s": t1 - t0, "floor_train_s": t2 - t1, "floor_s": t2 - t0}


def write_json(path: str, result: dict) -> None:
    """A benchmark's result as JSON at ``path`` (folders made), and where it went."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


def summarise(rows: list[dict]) -> dict:
    keys = rows[0].keys()
    return {k: statistics.median(r[k] for r in rows) for k in keys}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds after one warm-up epoch each")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: on cores that other jobs share, 2 threads ran the UNet many times slower)",
    )
    ap.add_argument("--algorithms", default="pxpo,ddpo", help="comma-separated: pxpo, ddpo")
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before / after)")
    args, overrides = ap.parse_known_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1 (got {args.repeats})")
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    bad = [a for a in algorithms if a not in ("pxpo", "ddpo")]
    if bad or not algorithms:
        ap.error(f"--algorithms takes pxpo and/or ddpo, comma-separated (got {args.algorithms!r})")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="pxpo-speed-") as tmp:
        trainers = {a: build_trainer(a, overrides, args.threads, tmp) for a in algorithms}
        try:
            runs: dict[str, list[dict]] = {a: [] for a in algorithms}
            work = {}
            for a, tr in trainers.items():  # warm-up: allocator, thread pools, lazy imports
                epoch(tr)
                work[a] = unet_work(tr)
            for r in range(args.repeats):
                floors = {}
                for a, tr in trainers.items():
                    with PeakMemory(tr.accel.device) as mem:
                        row = epoch(tr)
                    row["peak_memory_mb"] = mem.peak / 2**20
                    key = json.dumps(work[a], sort_keys=True)  # the same work is timed once a round
                    floors[key] = floors.get(key) or unet_floor(tr, work[a])
                    row.update(floors[key])
                    row["overhead"] = row["epoch_s"] / row["floor_s"]
                    runs[a].append(row)
                    print(
                        f"round {r + 1}/{args.repeats} {a}: epoch {row['epoch_s']:.2f} s (sampling "
                        f"{row['sample_s']:.2f}, training {row['train_s']:.2f}), UNet floor {row['floor_s']:.2f} s, "
                        f"overhead {row['overhead']:.2f}x, peak {row['peak_memory_mb']:.0f} MB",
                        flush=True,
                    )
        finally:
            for tr in trainers.values():
                tr.reward.close()
                tr.run.close()
                tr.folder.release()
    dev = next(iter(trainers.values())).accel.device
    result = {
        "label": args.label,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "overrides": overrides,
        "repeats": args.repeats,
        "work": work,
        "median": {a: summarise(rows) for a, rows in runs.items()},
        "runs": runs,
        "memory": "peak RSS (polled)" if dev.type == "cpu" else "cuda max_memory_allocated",
    }
    if "pxpo" in runs and "ddpo" in runs:
        result["pxpo_over_ddpo_epoch"] = statistics.median(
            p["epoch_s"] / d["epoch_s"] for p, d in zip(runs["pxpo"], runs["ddpo"])
        )
    print(f"\ndevice={dev} threads={torch.get_num_threads()} repeats={args.repeats} overrides={overrides or 'none'}")
    print("| algorithm | epoch s | sampling s | training s | UNet floor s | overhead | peak MB |")
    print("|---|---|---|---|---|---|---|")
    for a, m in result["median"].items():
        print(
            f"| {a} | {m['epoch_s']:.2f} | {m['sample_s']:.2f} | {m['train_s']:.2f} | {m['floor_s']:.2f} | "
            f"{m['overhead']:.2f}x | {m['peak_memory_mb']:.0f} |"
        )
    if "pxpo_over_ddpo_epoch" in result:
        print(f"PXPO / DDPO epoch time (median of paired rounds): {result['pxpo_over_ddpo_epoch']:.3f}")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
