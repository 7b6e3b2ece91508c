"""Several processes, one run: the launch check, the batch split, and metrics over all processes.

pxpo runs on accelerate (torch.distributed underneath: gloo on CPUs, NCCL on GPUs). Every process
keeps the same random state (seeded with ``seed``) and draws the prompts and noise of the *global*
batch, keeping its own rows (``shard``): process r of W samples rows r*B/W ... (r+1)*B/W of what one
process would sample with the same seed. Rewards are gathered before advantages (the trainer), the
UNet's gradients are averaged by DDP (accelerate's ``prepare``), so every process applies the same
update to the same weights.
"""

from __future__ import annotations

import os

import torch

from pxpo.errors import UserError

# what launchers set: torchrun / accelerate (WORLD_SIZE), MPI (the others)
WORLD_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_processes(env=os.environ) -> int:
    """How many processes the launcher says it started (1 when nothing says so)."""
    for key in WORLD_ENV:
        try:
            n = int(env.get(key, "1"))
        except ValueError:
            continue
        if n > 1:
            return n
    return 1


def check_launch(num_processes: int, env=os.environ) -> None:
    """Refuse a launch of several processes that accelerate does not join into one process group:
    each would train alone on the same prompts, noise and run folder."""
    launched = launched_processes(env)
    if launched > 1 and num_processes == 1:
        raise UserError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but accelerate joined none of them into a "
            "process group, so each would train alone on the same prompts and run folder. On CPUs set "
            f"ACCELERATE_USE_CPU=true (e.g. ACCELERATE_USE_CPU=true torchrun --nproc_per_node {launched} -m pxpo.cli "
            "train ...); on GPUs check that every process sees a GPU (CUDA_VISIBLE_DEVICES, "
            "python -c 'import torch; print(torch.cuda.device_count())'), or launch with accelerate launch "
            f"--multi_gpu --num_processes {launched} -m pxpo.cli train ..."
        )


def check_batches(sample_batch: int, group_size: int, train_batch: int, world: int) -> None:
    """The config's batches are global; each of ``world`` processes takes an equal share."""
    if world == 1:
        return
    if sample_batch % (world * group_size):
        unit = world * group_size
        what = f"{world} processes" + (f" x sample.group_size={group_size}" if group_size > 1 else "")
        near = sorted({k * unit for k in (sample_batch // unit, sample_batch // unit + 1) if k > 0})
        raise UserError(
            f"sample.batch_size={sample_batch} is the global batch, split over {what}: use a multiple "
            f"of {unit} (e.g. {' or '.join(map(str, near))}), or launch a number of processes that "
            "divides it"
        )
    if train_batch % world:
        raise UserError(
            f"train.batch_size={train_batch} is the global batch per optimizer step, split over {world} "
            f"processes: use a multiple of {world}, or launch a number of processes that divides it"
        )


def check_world_size(recorded: int, world: int, run) -> None:
    """A resumed run continues with the number of processes it started with (each process's random
    state is in its checkpoint). ``recorded`` 0: a run from before pxpo recorded it."""
    if recorded and recorded != world:
        launch = (
            "pxpo train"
            if recorded == 1
            else f"torchrun --nproc_per_node {recorded} -m pxpo.cli train (CPUs: with ACCELERATE_USE_CPU=true) or "
            f"accelerate launch --num_processes {recorded} -m pxpo.cli train"
        )
        raise UserError(
            f"run {run} was trained by {recorded} process{'es' if recorded > 1 else ''} "
            f"(world_size in its config.yaml), this launch has {world}: resume it with {recorded}: "
            f"{launch} --resume={run}"
        )


def shard(n: int, index: int, count: int) -> slice:
    """Process ``index`` of ``count``'s rows of a global batch of ``n`` (``n`` divisible by ``count``)."""
    per = n // count
    return slice(index * per, (index + 1) * per)


def mean_across(accel, values: dict[str, float]) -> dict[str, float]:
    """Each key's mean over all processes (equal shares: the mean of the global batch); one collective."""
    if accel.num_processes == 1 or not values:
        return values
    keys = sorted(values)
    local = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=accel.device)
    total = accel.reduce(local, reduction="mean")
    return dict(zip(keys, total.cpu().tolist()))
