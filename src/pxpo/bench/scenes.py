"""The scenes suite: per-part tasks on shapes-scenes (a sky, a ground and 1-3 objects), each run with
``pxpo train``'s own defaults (the recipe) and a few recipe variants, judged from the pictures.

A task is a ``scene-parts`` reward (what to change, which part, to what) and the captions it trains on
(scenes captions that leave the asked part open, and never name the target colour). Its measures, read
by the model-free scene reader (:mod:`pxpo.testbed.scene_reader`) with each part read on the *before*
picture of the same evaluation noise, so that moving a boundary earns nothing:

- ``target``: the share of the asked pixels whose nearest palette colour is the target ("background":
  the colour of the sky or ground around them), averaged over the task's pairs;
- ``change_in`` / ``change_out``: the mean absolute change of the asked pixels and of all others, and
  ``locality`` = change_out / change_in (0: only what was asked moved; 1: the whole picture did);
- health: ``tv_ratio`` (total variation after / before: noise up, blanking down), ``parts_before`` /
  ``parts_after`` (the scenes judge's share of the parts the captions name that the pictures show,
  counting only the items the task leaves alone: ``SceneTask.kept_items``). A run is healthy when
  0.5 <= tv_ratio <= 1.5 and parts_after >= parts_before - 0.1.

``TASKS`` chose the recipe; ``UNSEEN`` are checked after it was chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pxpo.errors import UserError

OUT = Path("benchmarks/results/scenes")
# Each variant spells out its KL settings, so that a cached record stays what it was whatever pxpo
# train's defaults become; "default" alone takes them as they are.
FIXED = ["--train.kl_target=0"]
UNASKED = ["--train.kl_region=unasked"]
ADAPTIVE = [*UNASKED, "--train.kl_target=0.01"]  # the weight follows a target KL per anchored pixel
FAST_FALL = ["--train.kl_loosen_rate=0.2"]  # the adaptive anchor's fall before slow-loosen
EARLIER = ["--train.kl_tighten_rate=0.2", *FAST_FALL]  # the adaptive anchor's rise before slow-tighten
SLOW = ["--train.kl_tighten_rate=0.05", *FAST_FALL]  # slow-tighten: up by at most 5% per update, down by 20%
SLOW_BOTH = ["--train.kl_tighten_rate=0.05", "--train.kl_loosen_rate=0.05"]  # slow-loosen: up and down by at most 5%
DDPO = ["--train.algorithm=ddpo"]
FLOW = ["--model.name=shapes-scenes-flow"]
# Flow-GRPO's scalar: one number per picture (the map's mean), its advantage normalised within each caption's
# group of 4; the flow suite's grpo too (pxpo.bench.flow), so that both suites run one design
GRPO_RECIPE = {
    "train": {"algorithm": "ddpo", "advantages": "group"},
    "experimental": {"group_scale": "group"},
    "sample": {"group_size": 4},
}
GRPO = [f"--{section}.{key}={value}" for section, kv in GRPO_RECIPE.items() for key, value in kv.items()]
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "fixed-hold": ["--train.kl_region=hold", *FIXED],  # one fixed weight; hold, or every pixel when nothing is kept
    "unasked": [*UNASKED, *FIXED],
    "adaptive": [*ADAPTIVE, *EARLIER],
    "adaptive-hold": ["--train.kl_region=hold", "--train.kl_target=0.01", *EARLIER],
    "adaptive-tight": [*UNASKED, "--train.kl_target=0.003", *EARLIER],
    "relative": [*ADAPTIVE, "--experimental.kl_target_ratio=0.2", *EARLIER],
    "adaptive-every": [*ADAPTIVE, "--train.timestep_fraction=1.0", *EARLIER],
    "slow-tighten": [*ADAPTIVE, *SLOW],
    "anchor-all": [*ADAPTIVE, "--train.kl_steps=all", *EARLIER],
    "adaptive-region": [*ADAPTIVE, "--train.loss_norm=region", *EARLIER],
    # LoRA on the denoiser's attention instead of every weight (conv weights, which draw the layout, stay)
    "lora-3e-4": [*ADAPTIVE, *SLOW, "--model.finetune=lora", "--train.lr=3e-4"],
    "lora-1e-3": [*ADAPTIVE, *SLOW, "--model.finetune=lora", "--train.lr=1e-3"],
    # the kept pixels' advantages divided by their own scale, so keeping weighs as much as changing
    "part-apart": [*ADAPTIVE, *SLOW, "--experimental.part_scale=apart"],
    # evaluate and keep the moving average of the trained weights (diffusers' EMAModel, decay up to 0.9)
    "ema": [*ADAPTIVE, *SLOW, "--train.ema_decay=0.9"],
    # the anchor's weight falls as slowly as it rises: before the policy moves, the KL is about 0 and a 20% fall
    # per update takes the weight from 1 to 0.1 in ten updates, whatever the task
    "slow-loosen": [*ADAPTIVE, *SLOW_BOTH],
    # the least noisy half trained and the noisiest half drawn without noise and untrained (timestep_order=last),
    # so that the layout the first steps decide should stay where it was
    "late": [*ADAPTIVE, *SLOW_BOTH, "--train.timestep_order=last"],
    "ddpo-fixed-hold": [*DDPO, "--train.kl_region=hold", *FIXED],
    "ddpo-adaptive": [*DDPO, *ADAPTIVE, *EARLIER],
    "ddpo-slow-tighten": [*DDPO, *ADAPTIVE, *SLOW],
    "ddpo-slow-loosen": [*DDPO, *ADAPTIVE, *SLOW_BOTH],
    # the recipe on the scenes world's flow model (Flow-GRPO's SDE step as the policy), and Flow-GRPO's scalar there
    "flow": [*FLOW, *ADAPTIVE, *SLOW_BOTH],
    "flow-grpo": [*FLOW, *ADAPTIVE, *SLOW_BOTH, *GRPO],
    # the other two per-pixel designs (pxpo.core.objectives): the map as a mask on one advantage per picture
    # (DenseFlow-GRPO), and each element's gradient with the picture's ratio (the detached ratio)
    "flow-mask": [*FLOW, *ADAPTIVE, *SLOW_BOTH, "--train.credit=mask"],
    "flow-detached": [*FLOW, *ADAPTIVE, *SLOW_BOTH, "--train.credit=detached"],
}


@dataclass(frozen=True)
class SceneTask:
    name: str
    about: str
    parts: tuple  # (part, target) pairs of the scene-parts reward
    outside: str = "keep"
    prompts: dict = field(default_factory=dict)  # the scenes prompt source's parameters
    model: str = "shapes-scenes"

    def kept_items(self) -> tuple:
        """The scenes judge's items this task leaves alone: a sky or ground target changes that part's
        colour, an object target its objects' colour, a removal every object item (the count changes),
        and a fixed region any colour it covers."""
        from pxpo.testbed.scene_judge import ITEMS

        changed = set()
        for part, target in self.parts:
            if target == "keep":
                continue
            if part in ("sky", "ground"):
                changed.add(part)
            elif isinstance(part, str) and part.startswith(("object", "small-", "large-")):
                changed.add("object_colour")
            else:  # a fixed region or box: whatever it covers may change colour
                changed |= {"sky", "ground", "object_colour"}
            if target == "background":
                changed |= {"count", "object_colour", "object_shape", "object_size"}
        return tuple(i for i in ITEMS if i not in changed)

    def overrides(self) -> dict:
        return {
            "model": {"name": self.model},
            "reward": {
                "name": "scene-parts",
                "params": {"parts": [list(p) for p in self.parts], "outside": self.outside},
            },
            "prompts": {"name": "scenes", "params": dict(self.prompts)},
        }


def _open(part: str, colour: str | None = None, **kw) -> dict:
    """Captions that leave ``part`` unnamed (sky or ground) and name no object in ``colour``."""
    named = [p for p in ("objects", "sky", "ground") if p != part]
    return {"named": named, **({"exclude_colours": [colour]} if colour else {}), **kw}


NEUTRAL = "neutral"
TASKS: dict[str, SceneTask] = {
    t.name: t
    for t in [
        # parts: the sky, the ground
        SceneTask(
            "sky-blue",
            "the sky blue, the rest as drawn (outside: keep)",
            (("sky", "blue"),),
            prompts=_open("sky", "blue"),
        ),
        SceneTask(
            "sky-blue-neutral",
            "the sky blue, no opinion elsewhere (outside: neutral)",
            (("sky", "blue"),),
            outside=NEUTRAL,
            prompts=_open("sky", "blue"),
        ),
        SceneTask(
            "sky-blue-named",
            "the sky blue against captions that name every part, the sky's colour too",
            (("sky", "blue"),),
            prompts={"exclude_colours": ["blue"]},
        ),
        # objects, each scored on its own
        SceneTask(
            "objects-yellow",
            "every object yellow, sky and ground kept",
            (("objects", "yellow"),),
            prompts={"attributes": ["size", "shape"], "exclude_colours": ["yellow"]},
        ),
        SceneTask(
            "objects-yellow-neutral",
            "every object yellow, no opinion elsewhere",
            (("objects", "yellow"),),
            outside=NEUTRAL,
            prompts={"attributes": ["size", "shape"], "exclude_colours": ["yellow"]},
        ),
        SceneTask(
            "left-red",
            "the leftmost object red, the others and the background kept",
            (("object-left", "red"),),
            prompts={"attributes": ["size", "shape"], "exclude_colours": ["red"], "min_objects": 2},
        ),
        SceneTask(
            "large-cyan",
            "the large objects cyan, the small ones and the background kept",
            (("large-objects", "cyan"),),
            prompts={"attributes": ["size", "shape"], "exclude_colours": ["cyan"]},
        ),
        # opposite feedback in one picture, and removal
        SceneTask(
            "left-kept-right-gone",
            "opposite maps: the leftmost object liked (kept), the rightmost removed",
            (("object-left", "keep"), ("object-right", "background")),
            prompts={"attributes": ["shape"], "min_objects": 2},
        ),
        SceneTask(
            "remove-small",
            "small objects removed (painted as the sky or ground around them)",
            (("small-objects", "background"),),
            prompts={"attributes": ["colour", "shape"]},
        ),
        # fixed regions, now reachable: the world varies where its parts meet
        SceneTask(
            "top-blue",
            "the top half blue whatever is there, the rest kept (a fixed region)",
            (("top", "blue"),),
            prompts={"exclude_colours": ["blue"]},
        ),
        SceneTask(
            "top-blue-neutral",
            "the top half blue, no opinion elsewhere (the README's example, on scenes)",
            (("top", "blue"),),
            outside=NEUTRAL,
            prompts={"exclude_colours": ["blue"]},
        ),
        SceneTask(
            "quarter-green",
            "the top-right quarter green, the rest kept",
            (("top-right", "green"),),
            prompts={"exclude_colours": ["green"]},
        ),
    ]
}

UNSEEN: dict[str, SceneTask] = {
    t.name: t
    for t in [
        SceneTask(
            "ground-green-neutral",
            "the ground green, no opinion elsewhere",
            (("ground", "green"),),
            outside=NEUTRAL,
            prompts=_open("ground", "green"),
        ),
        SceneTask(
            "quarter-purple",
            "the bottom-left quarter purple, the rest kept",
            (("bottom-left", "purple"),),
            prompts={"exclude_colours": ["purple"]},
        ),
        SceneTask(
            "right-cyan-left-gone",
            "two parts at once: the rightmost object cyan, the leftmost removed",
            (("object-right", "cyan"), ("object-left", "background")),
            prompts={"attributes": ["shape"], "exclude_colours": ["cyan"], "min_objects": 2},
        ),
        SceneTask(
            "sky-white-ground-black",
            "two-sided: the sky white and the ground black, objects kept",
            (("sky", "white"), ("ground", "black")),
            prompts={"named": ["objects"], "exclude_colours": ["white", "black"]},
        ),
        SceneTask(
            "small-red-neutral",
            "the small objects red, no opinion elsewhere",
            (("small-objects", "red"),),
            outside=NEUTRAL,
            prompts={"attributes": ["size", "shape"], "exclude_colours": ["red"]},
        ),
    ]
}


def get_task(name: str) -> SceneTask:
    if name in TASKS or name in UNSEEN:
        return TASKS.get(name) or UNSEEN[name]
    raise UserError(f"unknown scenes task {name!r}; tasks: {', '.join(TASKS)}; unseen: {', '.join(UNSEEN)}")


# ---- measures ---------------------------------------------------------------------------------
def asked_masks(task: SceneTask, before: torch.Tensor) -> list[np.ndarray]:
    """Bool [B, H, W] per pair that asks for a change, read on ``before``."""
    from pxpo.testbed import scene_reader
    from pxpo.testbed.scene_rewards import _part_mask

    reading = scene_reader.read(before)
    h, w = before.shape[-2:]
    return [_part_mask(part, reading, h, w).numpy() > 0.5 for part, target in task.parts if target != "keep"]


def target_measure(task: SceneTask, images: torch.Tensor, before: torch.Tensor) -> float:
    """The share of asked pixels whose nearest palette colour is what the task asks (module docstring)."""
    from pxpo.testbed import colours, scene_reader, world

    classes = colours.classify_colours(colours.as_numpy(images))  # [B, H, W] palette index
    fill = colours.classify_colours(colours.as_numpy(scene_reader.read(before).fill()))
    shares = []
    targets = [t for _, t in task.parts if t != "keep"]
    for target, mask in zip(targets, asked_masks(task, before)):
        want = fill if target == "background" else world.COLOURS.index(target)
        hit = classes == want
        if mask.any():
            shares.append(float((hit & mask).sum() / mask.sum()))
    return float(np.mean(shares)) if shares else float("nan")


def measures(task: SceneTask, before: torch.Tensor, after: torch.Tensor, prompts: list[str]) -> dict:
    from pxpo.bench.tasks import total_variation
    from pxpo.testbed import scene_judge

    out = {"target_before": target_measure(task, before, before), "target_after": target_measure(task, after, before)}
    out["target_gain"] = out["target_after"] - out["target_before"]
    inside = np.any(asked_masks(task, before), axis=0)
    change = (after - before).abs().mean(dim=1).numpy()  # [B, H, W]
    out["change_in"] = float(change[inside].mean()) if inside.any() else float("nan")
    out["change_out"] = float(change[~inside].mean())
    out["locality"] = out["change_out"] / max(out["change_in"], 1e-8)
    kept = task.kept_items()
    out["parts_before"] = scene_judge.judge(before, prompts, kept).get("parts", float("nan"))
    out["parts_after"] = scene_judge.judge(after, prompts, kept).get("parts", float("nan"))
    out["tv_ratio"] = total_variation(after) / max(total_variation(before), 1e-8)
    out["healthy"] = bool(0.5 <= out["tv_ratio"] <= 1.5 and not out["parts_after"] < out["parts_before"] - 0.1)
    return out
