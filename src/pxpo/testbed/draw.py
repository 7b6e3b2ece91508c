"""A pipeline's pictures for a list of captions, as both worlds' evaluators draw them: batch i seeded
seed + i, after one untimed warm-up call, with the steady-state sampling time per 32 pictures."""

from __future__ import annotations

import time

import torch


def draw(
    pipe, prompts: list[str], steps: int, guidance: float, seed: int, batch: int, size: int | None = None
) -> tuple[torch.Tensor, float]:
    """(images [n, 3, H, W] float on the CPU, seconds per 32 pictures); ``size``: height and width."""
    hw = {"height": size, "width": size} if size else {}
    pipe(prompts[:batch], **hw, num_inference_steps=2, guidance_scale=guidance, output_type="pt")  # warm-up
    chunks, seconds = [], 0.0
    for i, start in enumerate(range(0, len(prompts), batch)):
        t0 = time.perf_counter()
        out = pipe(
            prompts[start : start + batch],
            **hw,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(seed + i),
            output_type="pt",
        )
        seconds += time.perf_counter() - t0
        chunks.append(out.images.float().cpu())
    return torch.cat(chunks), seconds / len(prompts) * 32
