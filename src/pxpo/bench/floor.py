"""How local can a picture's change be, when only the latents inside the region change?

PXPO credits latent pixels, but the picture is what the suite measures, and the VAE decoder mixes
neighbouring latents: an object pixel's colour depends on the background latents around it. This
module puts a number on that floor for one run's evaluation pictures:

    z_before, z_after = E(before), E(after)                       # [B, 4, h, w], the VAE's means
    inside = share of each latent pixel's footprint in the region  # [B, h, w]
    z_mix = where(inside >= 0.5, z_after, z_before)              # only the region's latents changed
    floor = mean|D(z_mix) - D(z_before)| outside / inside          # pixels, per the suite's locality

A run's own locality (its ``change_out / change_in``) is read on ``D(z_after)`` against
``D(z_before)`` here too, so both go through the same encoder round trip. The part of the run's
locality above the floor is change that the policy made outside the region; the floor itself is
the decoder's, and no credit assignment on latents can go below it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pxpo.bench.tasks import Task, task_region
from pxpo.errors import UserError


@torch.no_grad()
def decoder_floor(vae, task: Task, before: torch.Tensor, after: torch.Tensor) -> dict:
    """[B, 3, H, W] pictures in [0, 1] before and after -> {locality_vae, locality_floor, ...}."""
    if task.measure != "colour":
        raise UserError(f"task {task.name!r} has no region to be local to (measure {task.measure!r})")
    inside_t = torch.from_numpy(task_region(task, before))  # [B, H, W]

    def enc(x):
        return vae.encode((x * 2 - 1).to(vae.dtype)).latent_dist.mean  # [B, 4, h, w]

    def dec(z):
        return (vae.decode(z).sample.float() / 2 + 0.5).clamp(0, 1)  # [B, 3, H, W]

    zb, za = enc(before), enc(after)
    share = F.adaptive_avg_pool2d(inside_t.float()[:, None], zb.shape[-2:])  # [B, 1, h, w]
    zmix = torch.where(share >= 0.5, za, zb)
    db = dec(zb)

    def locality(x):
        change = (x - db).abs().mean(1)  # [B, H, W]
        c_in, c_out = float(change[inside_t].mean()), float(change[~inside_t].mean())
        return c_in, c_out, c_out / max(c_in, 1e-8)

    a_in, a_out, a_loc = locality(dec(za))
    f_in, f_out, f_loc = locality(dec(zmix))
    return {
        "change_in_vae": a_in,
        "change_out_vae": a_out,
        "locality_vae": a_loc,
        "floor_change_in": f_in,
        "floor_change_out": f_out,
        "locality_floor": f_loc,
    }
