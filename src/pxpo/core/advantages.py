"""Advantages from rewards: scalars [B] (DDPO) or maps [B, h, w] (PXPO), normalised then clipped.

Three baselines, each the same for scalars and for maps. How a map is normalised (``norm``):

- ``pixel`` (default): per-pixel baseline, one pooled scale,
  ``A_bij = (r_bij - mean_b r_bij) / (sqrt(mean_ij var_b r_bij) + eps)``: each latent pixel is
  compared with the same pixel of other samples, and a pixel whose reward hardly varies gets a
  small advantage. Right for rewards tied to fixed places (colour in a region).
- ``pixel-std``: per-pixel baseline and per-pixel std. Blows noise up to unit size wherever the
  reward is nearly constant across samples (segmenter background, pixels kept as they were).
- ``global``: one baseline and one scale over all samples and pixels,
  ``A_bij = (r_bij - mean_{b,ij} r) / (std_{b,ij} r + eps)``. For rewards that follow the object
  wherever it is (segment-shape): comparing pixel (i, j) across samples whose objects sit in
  different places mostly measures where the object is, not how good it is.

Each gives exactly the scalar's advantage at every pixel for a spatially constant map.
The sample sets the statistics come from:
- ``batch``: A = (r - mean_batch) / (std_batch + eps).
- ``per-prompt`` (DDPO's stat tracking): a buffer per prompt keeps its last ``buffer_size`` rewards
  across epochs; A = (r - mean_prompt) / (std_prompt + eps). Until a prompt's buffer holds
  ``min_count`` rewards, the batch statistics are used instead.
- ``group``: the baseline is the mean over the samples of the same group in this batch: the same
  prompt (GRPO), or, with shared-noise groups (``sample.group_size`` K > 1), the K trajectories
  drawn from the same prompt *and the same x_T* with fresh step noise. Then pixel (i, j) of a
  sample is compared with pixel (i, j) of pictures with the same layout, not of other layouts.
  The scale (``group_scale``) is either ``batch``: one scale pooled over every group's residuals,
  ``sqrt(mean_{b,ij} (r_bij - mean_{g(b)} r_ij)^2)`` (default; a group that hardly varies gets a
  small advantage instead of its noise blown up to unit size), or ``group``: each group's own std
  (GRPO's normalisation).
Then A is clipped to [-clip, clip] (DDPO's adv_clip_max).
"""

from __future__ import annotations

from collections import defaultdict, deque

import torch
from pxpo.errors import ConfigError

EPS = 1e-4
KINDS = ("batch", "per-prompt", "group")


NORMS = ("pixel", "pixel-std", "global")


def _normalise(r: torch.Tensor, ref: torch.Tensor, norm: str = "pixel") -> torch.Tensor:
    """(r - mean(ref)) / (std(ref) + eps) over dim 0 (samples); maps per ``norm`` (module doc)."""
    if r.dim() > 1 and norm == "global":
        scale = ref.std(unbiased=False) if ref.shape[0] > 1 else torch.zeros(())
        return (r - ref.mean()) / (scale + EPS)
    mean = ref.mean(dim=0, keepdim=True)
    if ref.shape[0] < 2:
        scale = torch.zeros_like(mean)
    elif ref.dim() > 1 and norm == "pixel":
        scale = ref.var(dim=0, unbiased=False).mean().sqrt()  # 0-dim: sqrt of the mean per-pixel variance
    else:
        scale = ref.std(dim=0, unbiased=False, keepdim=True)
    return (r - mean) / (scale + EPS)


GROUP_SCALES = ("batch", "group")


def _centre(r: torch.Tensor, w: torch.Tensor | None, norm: str) -> torch.Tensor:
    """Residuals from the (weighted) baseline over dim 0: per pixel for maps, over everything for
    ``norm="global"``. ``w`` [B, h, w] in [0, 1] marks where the reward has an opinion: the baseline
    of a pixel is the mean over the samples that have one there, and the residual is weighted by it
    (0 where there is none)."""
    dims = tuple(range(r.dim())) if (r.dim() > 1 and norm == "global") else (0,)
    if w is None:
        return r - r.mean(dim=dims, keepdim=True)
    wsum = w.sum(dim=dims, keepdim=True)
    mean = (w * r).sum(dim=dims, keepdim=True) / wsum.clamp_min(1e-12)
    return w * (r - mean)


def _centre_parts(r: torch.Tensor, w: torch.Tensor | None, keep: torch.Tensor | None, norm: str) -> torch.Tensor:
    """Like :func:`_centre`, but when the reward asks some pixels to change and others to stay as
    they were (``keep`` [B, h, w] in [0, 1], the hold maps of ``outside: keep``), each pixel is
    compared only with the samples that ask the same of it there: the "change" residual from the
    baseline of the samples where it is to change, the "keep" residual from the baseline of those
    where it is kept. Otherwise, where the region follows each picture's own object, pixel (i, j)'s
    baseline mixes closeness-to-the-target of the pictures whose object is there with
    closeness-to-the-reference (about 1) of the pictures whose background is there, and the
    advantage mostly says where the object was. A keep map that is the same for every sample (a
    fixed region) gives exactly :func:`_centre`'s residuals."""
    if keep is None:
        return _centre(r, w, norm)
    change, kept = _parts(r, w, keep)
    return _centre(r, change, norm) + _centre(r, kept, norm)


def _pooled_scale(resid: torch.Tensor, w: torch.Tensor | None, norm: str) -> torch.Tensor:
    """sqrt of the mean squared residual: one number, or per pixel for ``norm="pixel-std"``
    (the mean over weighted entries, sum(resid^2) / sum(w), when ``w`` is given)."""
    dims = (0,) if (resid.dim() > 1 and norm == "pixel-std") else tuple(range(resid.dim()))
    if w is None:
        return resid.pow(2).mean(dim=dims, keepdim=True).sqrt()
    return (resid.pow(2).sum(dim=dims, keepdim=True) / w.sum(dim=dims, keepdim=True).clamp_min(1e-12)).sqrt()


PART_SCALES = ("pooled", "apart")


def _parts(r: torch.Tensor, w: torch.Tensor | None, keep: torch.Tensor) -> list:
    """The weight maps [B, h, w] of the two parts compared apart: the pixels asked to change and the
    pixels kept (``w`` None = an opinion everywhere)."""
    base = torch.ones_like(r) if w is None else w
    keep = keep.to(r)
    return [base * (1 - keep), base * keep]


def group_advantages(
    rewards: torch.Tensor,
    keys: list,
    norm: str = "pixel",
    scale: str = "batch",
    weights: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    part_scale: str = "pooled",
) -> torch.Tensor:
    """[B] or [B, h, w] -> same shape: baseline within each group of samples sharing a key (a prompt,
    or a shared-noise group id); singletons get 0. ``scale``: ``group`` divides each group by its own
    pooled scale (GRPO), ``batch`` divides every residual by one scale pooled over all groups (per
    pixel for ``norm="pixel-std"``). ``weights`` [B, h, w]: where a map has an opinion (see _centre);
    ``keep`` [B, h, w]: where it asks to keep the picture, compared apart (see _centre_parts).
    ``part_scale`` (with ``keep``): ``pooled`` divides the change and keep residuals by one scale, so
    a kept part that hardly varies stays small; ``apart`` divides each by its own pooled scale, so
    keeping the picture weighs as much in the update as changing it."""
    if scale not in GROUP_SCALES:
        raise ValueError(f"unknown group scale {scale!r}; use one of {', '.join(GROUP_SCALES)}")
    if part_scale not in PART_SCALES:
        raise ValueError(f"unknown part scale {part_scale!r}; use one of {', '.join(PART_SCALES)}")
    groups: dict = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    paired = torch.tensor([len(groups[k]) > 1 for k in keys])
    pooled = part_scale == "pooled" or keep is None
    parts = [weights] if pooled else _parts(rewards, weights, keep)  # each part gets a scale of its own
    out = torch.zeros_like(rewards)
    for w_all in parts:
        resid = torch.zeros_like(rewards)
        for idx in groups.values():
            if len(idx) < 2:
                continue
            sel = torch.tensor(idx)
            w = w_all[sel] if w_all is not None else None
            if pooled:  # both parts' residuals (if any), scaled together below
                resid[sel] = _centre_parts(rewards[sel], w, keep[sel] if keep is not None else None, norm)
            else:
                resid[sel] = _centre(rewards[sel], w, norm)
            if scale == "group":
                resid[sel] = resid[sel] / (_pooled_scale(resid[sel], w, norm) + EPS)
        if scale == "batch" and paired.any():
            w = w_all[paired] if w_all is not None else None
            resid = resid / (_pooled_scale(resid[paired], w, norm) + EPS)
        out = out + resid
    return out


def batch_advantages(
    rewards: torch.Tensor,
    norm: str = "pixel",
    weights: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    part_scale: str = "pooled",
) -> torch.Tensor:
    """[B] or [B, h, w] -> same shape, normalised over the batch (one group, pooled scale)."""
    return group_advantages(rewards, [0] * rewards.shape[0], norm, "batch", weights, keep, part_scale)


class PerPromptStats:
    """DDPO's per-prompt stat tracking: a buffer of recent rewards per prompt, kept across epochs."""

    def __init__(self, buffer_size: int = 32, min_count: int = 16, norm: str = "pixel"):
        if min_count > buffer_size:
            raise ConfigError(f"min_count ({min_count}) cannot exceed buffer_size ({buffer_size})")
        self.buffer_size, self.min_count, self.norm = buffer_size, min_count, norm
        self.buffers: dict[str, deque] = {}

    def __call__(self, rewards: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        out = torch.empty_like(rewards)
        for p in dict.fromkeys(prompts):
            idx = torch.tensor([i for i, q in enumerate(prompts) if q == p])
            buf = self.buffers.setdefault(p, deque(maxlen=self.buffer_size))
            buf.extend(rewards[idx].detach().cpu())
            ref = torch.stack(list(buf)) if len(buf) >= self.min_count else rewards.detach().cpu()
            out[idx] = _normalise(rewards[idx], ref.to(rewards.device), self.norm)
        return out

    def state_dict(self) -> dict:
        return {p: torch.stack(list(b)) for p, b in self.buffers.items() if len(b)}

    def load_state_dict(self, state: dict) -> None:
        self.buffers = {p: deque(list(v), maxlen=self.buffer_size) for p, v in state.items()}


def compute_advantages(
    rewards: torch.Tensor,
    prompts: list[str],
    kind: str = "batch",
    clip: float = 5.0,
    tracker: PerPromptStats | None = None,
    norm: str = "pixel",
    groups: list | None = None,
    group_scale: str = "batch",
    weights: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    part_scale: str = "pooled",
) -> torch.Tensor:
    """Advantages of the chosen ``kind`` (see module doc), clipped to [-clip, clip].
    ``norm`` applies to maps (the tracker carries its own); ``groups`` gives each sample's group key
    for ``kind="group"`` (default: its prompt); ``weights`` [B, h, w] in [0, 1] marks where a map has
    an opinion (batch and group kinds; pixels without one get no credit and do not move baselines);
    ``keep`` [B, h, w] where it asks to keep the picture as it was: kept and changed pixels get
    baselines of their own (batch and group kinds; :func:`_centre_parts`), scaled together or apart
    (``part_scale``, :func:`group_advantages`)."""
    if norm not in NORMS:
        raise ValueError(f"unknown advantage norm {norm!r}; use one of {', '.join(NORMS)}")
    if kind == "batch":
        adv = batch_advantages(rewards, norm, weights, keep, part_scale)
    elif kind == "group":
        adv = group_advantages(
            rewards, groups if groups is not None else prompts, norm, group_scale, weights, keep, part_scale
        )
    elif kind == "per-prompt":
        if tracker is None:
            raise ValueError("per-prompt advantages need a PerPromptStats tracker kept across epochs")
        if weights is not None:
            raise ValueError("per-prompt advantages do not take opinion weights; use train.advantages=batch or group")
        adv = tracker(rewards, prompts)
    else:
        raise ValueError(f"unknown advantage kind {kind!r}; use one of {', '.join(KINDS)}")
    return adv.clamp(-clip, clip)


def per_covered_pixel(x: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
    """Rescale a per-pixel term so that its mean over the whole picture becomes its mean over the
    pixels it covers:  x / mean_{b,ij}(cover)   (x [B, h, w] or [h, w], cover in [0, 1]).

    A loss that averages ``x * cover`` over every pixel grows with the covered area. A reward that
    asks for 20% of the picture would otherwise weigh 4x less against a KL anchor over the other 80%
    than a reward on 80% does against an anchor on 20%. ``train.loss_norm=region`` applies this to
    the advantages (covered: where the map has an opinion) and to the KL (covered: the held pixels),
    so their balance, ``train.kl_coef``, means the same for any region size. All-ones cover: no-op."""
    return x / cover.float().mean().clamp_min(1e-6)
