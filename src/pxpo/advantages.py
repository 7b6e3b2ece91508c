"""Advantages from rewards: scalars [B] (DDPO) or maps [B, h, w] (PXPO), normalised then clipped.

Three baselines, each the same for scalars and for maps. For maps the baseline is *per pixel*
(each latent pixel is compared with the same pixel of other samples) and the scale is *pooled*:

    A_bij = (r_bij - mean_b r_bij) / (sqrt(mean_ij var_b r_bij) + eps)              (std="pooled")

so a pixel whose reward hardly varies gets a small advantage. Dividing each pixel by its own std
(``std="pixel"``) instead inflates noise to unit size wherever the reward is nearly constant
(background pixels of a segmentation reward, pixels kept as they were), which drowned the signal
of the segment-shape and "keep" examples. Either way a spatially constant map gives exactly the
scalar's advantage at every pixel. The baselines:
- ``batch``: A = (r - mean_batch) / (std_batch + eps).
- ``per-prompt`` (DDPO's stat tracking): a buffer per prompt keeps its last ``buffer_size`` rewards
  across epochs; A = (r - mean_prompt) / (std_prompt + eps). Until a prompt's buffer holds
  ``min_count`` rewards, the batch statistics are used instead.
- ``group`` (GRPO-style): statistics over the samples of the same prompt in this batch.
Then A is clipped to [-clip, clip] (DDPO's adv_clip_max).
"""
from __future__ import annotations

from collections import defaultdict, deque

import torch

EPS = 1e-4
KINDS = ("batch", "per-prompt", "group")


STDS = ("pooled", "pixel")


def _normalise(r: torch.Tensor, ref: torch.Tensor, std: str = "pooled") -> torch.Tensor:
    """(r - mean(ref)) / (std(ref) + eps), statistics over dim 0 (samples); for maps the mean is per
    pixel and the std pooled over pixels (``std="pooled"``) or per pixel (``"pixel"``)."""
    mean = ref.mean(dim=0, keepdim=True)
    if ref.shape[0] < 2:
        scale = torch.zeros_like(mean)
    elif ref.dim() > 1 and std == "pooled":
        scale = ref.var(dim=0, unbiased=False).mean().sqrt()  # 0-dim: sqrt of the mean per-pixel variance
    else:
        scale = ref.std(dim=0, unbiased=False, keepdim=True)
    return (r - mean) / (scale + EPS)


def batch_advantages(rewards: torch.Tensor, std: str = "pooled") -> torch.Tensor:
    """[B] or [B, h, w] -> same shape, normalised over the batch."""
    return _normalise(rewards, rewards, std)


def group_advantages(rewards: torch.Tensor, prompts: list[str], std: str = "pooled") -> torch.Tensor:
    """Normalised within each group of samples sharing a prompt (singletons get 0)."""
    out = torch.zeros_like(rewards)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        groups[p].append(i)
    for idx in groups.values():
        sel = torch.tensor(idx)
        if len(idx) > 1:
            out[sel] = _normalise(rewards[sel], rewards[sel], std)
    return out


class PerPromptStats:
    """DDPO's per-prompt stat tracking: a buffer of recent rewards per prompt, kept across epochs."""

    def __init__(self, buffer_size: int = 32, min_count: int = 16, std: str = "pooled"):
        if min_count > buffer_size:
            raise ValueError(f"min_count ({min_count}) cannot exceed buffer_size ({buffer_size})")
        self.buffer_size, self.min_count, self.std = buffer_size, min_count, std
        self.buffers: dict[str, deque] = {}

    def __call__(self, rewards: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        out = torch.empty_like(rewards)
        for p in dict.fromkeys(prompts):
            idx = torch.tensor([i for i, q in enumerate(prompts) if q == p])
            buf = self.buffers.setdefault(p, deque(maxlen=self.buffer_size))
            buf.extend(rewards[idx].detach().cpu())
            ref = torch.stack(list(buf)) if len(buf) >= self.min_count else rewards.detach().cpu()
            out[idx] = _normalise(rewards[idx], ref.to(rewards.device), self.std)
        return out

    def state_dict(self) -> dict:
        return {p: torch.stack(list(b)) for p, b in self.buffers.items() if len(b)}

    def load_state_dict(self, state: dict) -> None:
        self.buffers = {p: deque(list(v), maxlen=self.buffer_size) for p, v in state.items()}


def compute_advantages(rewards: torch.Tensor, prompts: list[str], kind: str = "batch", clip: float = 5.0,
                       tracker: PerPromptStats | None = None, std: str = "pooled") -> torch.Tensor:
    """Advantages of the chosen ``kind`` (see module doc), clipped to [-clip, clip].
    ``std`` applies to maps (the tracker carries its own)."""
    if std not in STDS:
        raise ValueError(f"unknown advantage std {std!r}; use one of {', '.join(STDS)}")
    if kind == "batch":
        adv = batch_advantages(rewards, std)
    elif kind == "group":
        adv = group_advantages(rewards, prompts, std)
    elif kind == "per-prompt":
        if tracker is None:
            raise ValueError("per-prompt advantages need a PerPromptStats tracker kept across epochs")
        adv = tracker(rewards, prompts)
    else:
        raise ValueError(f"unknown advantage kind {kind!r}; use one of {', '.join(KINDS)}")
    return adv.clamp(-clip, clip)
