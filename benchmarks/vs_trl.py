"""pxpo against trl 0.23.1's DDPOTrainer: samples/s on the same pipeline, reward and config, alternated.

    bash benchmarks/vs_trl.sh [--rounds=3] [--threads=1] [--modes=full,lora] [--json=PATH] [KEY=VALUE ...]

(``vs_trl.sh`` builds the venv with trl 0.23.1 and runs this file in it.) Both trainers get the
embedded shapes-tiny pipeline (from its folder), DDPO's JPEG-compressibility reward (pxpo's
``jpeg-compressibility``, called by both), 16 samples per epoch in one batch, 10 DDIM steps, eta 1,
guidance 5 with CFG at training, one minibatch of 16, every timestep trained, PPO clip 1e-4,
advantages normalised over the batch, lr 1e-4, fp32, and ``full`` fine-tuning or LoRA rank 4 on
to_q/to_k/to_v/to_out.0 (trl's and pxpo's default targets). pxpo runs DDPO with no KL and no
reference pictures, which trl does not have. An epoch is sampling + reward + advantages + the
update: ``DDPOTrainer.step`` for trl, ``Trainer.collect`` / ``advantages`` / ``Policy.update`` for pxpo.

After one warm-up epoch each, the two alternate epoch by epoch, ``rounds`` times per mode; the
report is each one's median samples/s and the median of the per-round ratios pxpo / trl.
``KEY=VALUE`` overrides pxpo's config after the settings above (e.g. ``train.reuse_sampling=never``:
recompute the first update's UNet calls instead of reusing the sampling pass's, as before that option).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import epoch as pxpo_epoch, write_json  # noqa: E402  (benchmarks/speed.py: one pxpo epoch, timed)

SAMPLES, STEPS, GUIDANCE, LR, CLIP = 16, 10, 5.0, 1e-4, 1e-4


def pxpo_trainer(mode: str, threads: int, out_dir: str, overrides: list[str] = ()):
    from pxpo.config import parse_overrides
    from pxpo.training.config import RunConfig
    from pxpo.training.trainer import Trainer

    cfg = RunConfig()
    cfg.model.finetune, cfg.reward.name, cfg.reward.params, cfg.reward.reference = (
        mode,
        "jpeg-compressibility",
        {},
        "never",
    )
    t = cfg.train
    t.algorithm, t.objective, t.clip_range, t.kl_coef, t.advantages, t.lr = "ddpo", "clipped", CLIP, 0.0, "batch", LR
    t.batch_size, cfg.sample.batch_size, cfg.sample.num_batches = SAMPLES, SAMPLES, 1
    cfg.sample.num_steps, cfg.sample.guidance, cfg.sample.eta = STEPS, GUIDANCE, 1.0
    cfg.threads, cfg.out_dir, cfg.run_name, cfg.tensorboard = threads, out_dir, f"vs-trl-{mode}", False
    parse_overrides(cfg, ["--" + item.lstrip("-") for item in overrides], prog="vs_trl.py", description="")
    return Trainer(cfg)


def trl_trainer(mode: str, model_dir: str, out_dir: str):
    from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline

    from pxpo.rewards import get_reward

    reward = get_reward("jpeg-compressibility")

    def reward_fn(images, prompts, metadata):
        return reward(images.float(), list(prompts), list(metadata)).scalar.float(), {}

    config = DDPOConfig(
        num_epochs=1,
        sample_num_steps=STEPS,
        sample_eta=1.0,
        sample_guidance_scale=GUIDANCE,
        sample_batch_size=SAMPLES,
        sample_num_batches_per_epoch=1,
        train_batch_size=SAMPLES,
        train_gradient_accumulation_steps=1,
        train_learning_rate=LR,
        train_clip_range=CLIP,
        train_cfg=True,
        train_adv_clip_max=5.0,
        train_max_grad_norm=1.0,
        train_num_inner_epochs=1,
        train_timestep_fraction=1.0,
        train_adam_weight_decay=1e-4,
        mixed_precision="no",
        per_prompt_stat_tracking=False,
        async_reward_computation=False,
        log_with=None,
        save_freq=10**9,
        allow_tf32=False,
        project_kwargs={"project_dir": out_dir, "logging_dir": out_dir},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = DefaultDDPOStableDiffusionPipeline(model_dir, use_lora=mode == "lora")
        pipe.set_progress_bar_config(disable=True)
        return DDPOTrainer(config, reward_fn, lambda: ("", {}), pipe)


def trl_epoch(trainer, state: dict) -> dict:
    t0 = time.perf_counter()
    state["global_step"] = trainer.step(state["epoch"], state["global_step"])
    state["epoch"] += 1
    return {"epoch_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    import trl

    from pxpo.testbed.plugin import MODELS as NAMED

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternated epoch pairs per mode, after one warm-up each")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both")
    ap.add_argument("--modes", default="full,lora", help="comma-separated: full, lora")
    ap.add_argument("--json", default="", help="write the results here")
    args, overrides = ap.parse_known_args(argv)
    if bad := [o for o in overrides if "=" not in o or o.startswith("--")]:
        ap.error(
            f"unrecognized arguments: {' '.join(bad)} (pxpo overrides are KEY=VALUE, e.g. train.reuse_sampling=never)"
        )
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("full", "lora") for m in modes):
        ap.error(f"--modes takes full and/or lora, comma-separated (got {args.modes!r})")
    torch.set_num_threads(args.threads)
    model_dir = str(NAMED["shapes-tiny"])
    result = {
        "trl": trl.__version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "rounds": args.rounds,
        "samples_per_epoch": SAMPLES,
        "steps": STEPS,
        "pxpo_overrides": overrides,
        "modes": {},
    }
    with tempfile.TemporaryDirectory(prefix="pxpo-vs-trl-") as tmp:
        for mode in modes:
            ours = pxpo_trainer(mode, args.threads, tmp, overrides)
            theirs = trl_trainer(mode, model_dir, str(Path(tmp) / f"trl-{mode}"))
            state = {"epoch": 0, "global_step": 0}
            try:
                pxpo_epoch(ours), trl_epoch(theirs, state)  # warm-up
                rows = []
                for r in range(args.rounds):
                    first = r % 2 == 0  # alternate which goes first
                    a = pxpo_epoch(ours)["epoch_s"] if first else None
                    b = trl_epoch(theirs, state)["epoch_s"]
                    a = a if first else pxpo_epoch(ours)["epoch_s"]
                    rows.append({"pxpo_per_s": SAMPLES / a, "trl_per_s": SAMPLES / b, "ratio": b / a})
                    print(
                        f"{mode} round {r + 1}/{args.rounds}: pxpo {SAMPLES / a:.2f} samples/s, trl {SAMPLES / b:.2f}, "
                        f"pxpo / trl = {b / a:.2f}",
                        flush=True,
                    )
            finally:
                ours.reward.close()
                ours.run.close()
                ours.folder.release()
            result["modes"][mode] = {
                "pxpo_per_s": statistics.median(x["pxpo_per_s"] for x in rows),
                "trl_per_s": statistics.median(x["trl_per_s"] for x in rows),
                "ratio": statistics.median(x["ratio"] for x in rows),
                "rounds": rows,
            }
            del ours, theirs
    print(
        f"\ntrl {trl.__version__}, torch {torch.__version__}, {args.threads} thread(s), {SAMPLES} samples x "
        f"{STEPS} steps per epoch, CFG {GUIDANCE}, {args.rounds} alternated rounds"
    )
    print("| mode | pxpo samples/s | trl samples/s | pxpo / trl (median of rounds) |")
    print("|---|---|---|---|")
    for mode, m in result["modes"].items():
        print(f"| {mode} | {m['pxpo_per_s']:.2f} | {m['trl_per_s']:.2f} | {m['ratio']:.2f} |")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
