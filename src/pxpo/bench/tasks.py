"""The efficiency suite's tasks on shapes-tiny, and the measures that judge a run from its pictures.

A task is a per-pixel reward plus the captions it is trained on, and a *target measure* read from
the evaluation pictures by the model-free evaluator (``pxpo.testbed.evaluate``), not by the reward:

- colour tasks: the share of the region's pixels whose nearest palette colour is the target
  (averaged over the parts of a two-sided map);
- ``object-share`` tasks: the share of the picture the object covers (sign: grow +1, shrink -1).

Regions "object"/"background" are read on the *before* picture (the starting model's picture of the
same evaluation noise) by the shipped segmenter, so a run cannot score by moving the object's
boundary.

Every task but ``bg-blue-parts`` (the default ``pxpo train`` run: shapes-parts, partial captions) trains
shapes-tiny (``Task.model``), the model the suite was first run on; the tasks pin it so the cache
stays one experiment.
Captions: ``open`` is the empty caption (the model draws any shape, colour and background, so there
is variation to learn from); ``named`` are shapes-world training captions, which name the object's
colour, its shape and the background colour (a reward against the caption has little to work with);
``partial`` name the object's colour and shape only ("a red circle"), for shapes-parts: shapes-tiny
draws them poorly, so on shapes-tiny "open" means empty.

Colour tasks ask for the colour in the region and keep the rest as the starting model drew it
(``outside: keep``, the reference picture of the same noise).

Picture health, for every task: ``shape_kept`` (share of pictures whose evaluator shape reading is
unchanged), ``shape_acc`` against the caption (captions that name the shape), and ``tv_ratio``, the mean absolute
gradient of the pictures after / before (noise drives it up; blanking drives it down). A run is
``healthy`` when 0.5 <= tv_ratio <= 1.5 and, on named captions for tasks that leave the object's
shape alone, shape_kept >= 0.75. On open captions shape_kept is reported but does not decide: the
evaluator reads the shapes of those muddier pictures unstably (DDPO runs whose target did not move
kept 0.44-0.81 of their readings), so there it measures noise as much as damage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pxpo.testbed import colours, evaluate
from pxpo.testbed import world
from pxpo.rewards.colour import region_mask
from pxpo.errors import UserError

OPEN = {"name": "fixed", "params": {"prompt": ""}}
NAMED = {"name": "shapes-world", "params": {"split": "train"}}


def partial(target: str) -> dict:
    """Captions like "a red circle": the object named, the background left open, no object in ``target``."""
    return {"name": "shapes-world", "params": {"parts": ["colour", "shape"], "exclude_colours": [target]}}


@dataclass(frozen=True)
class Task:
    name: str
    about: str
    reward: dict  # {"name": ..., "params": ...}
    prompts: dict = field(default_factory=lambda: dict(OPEN))
    parts: tuple = ()  # ((region, colour), ...): the colour measure's regions and targets
    measure: str = "colour"  # "colour" or "object-share"
    sign: float = 1.0  # +1: the measure should rise; -1: fall
    keeps_shape: bool = True
    model: str = "shapes-tiny"

    @property
    def captions(self) -> str:
        if self.prompts["name"] == "fixed":
            return "open"
        return "partial" if "parts" in self.prompts.get("params", {}) else "named"

    def overrides(self) -> dict:
        return {
            "model": {"name": self.model},
            "reward": {"name": self.reward["name"], "params": self.reward.get("params", {})},
            "prompts": {"name": self.prompts["name"], "params": self.prompts.get("params", {})},
        }


def _colour(name, about, region, target, prompts=OPEN, **kw) -> Task:
    """Colour in a region, and the rest kept as the starting model drew it (``outside: keep``): what
    a person means by "make the background blue". With ``outside: neutral`` the reward has no
    opinion outside, and the quickest way up on open captions was to paint the whole picture in
    the target colour, objects included (background blue: 0.050 -> 0.993, 6 of 16 shapes left)."""
    params = {"target": target, "region": region, "outside": "keep"}
    keeps = region in ("background", "object")
    return Task(
        name, about, {"name": "colour", "params": params}, prompts, ((region, target),), **{"keeps_shape": keeps, **kw}
    )


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        _colour(
            "bg-blue", "background blue (segmenter, mask of the starting picture), open captions", "background", "blue"
        ),
        _colour(
            "bg-blue-named",
            "background blue against captions that name another background",
            "background",
            "blue",
            NAMED,
        ),
        _colour(
            "bg-blue-parts",
            "background blue on 'a red circle' captions, shapes-parts: the default pxpo train run",
            "background",
            "blue",
            partial("blue"),
            model="shapes-parts",
        ),
        _colour("object-yellow", "the object yellow (segmenter), open captions", "object", "yellow"),
        _colour("top-blue", "top half blue, open captions", "top", "blue"),
        _colour("top-blue-named", "top half blue against captions that name every colour", "top", "blue", NAMED),
        _colour("quarter-green", "top-left quarter green, open captions", "top-left", "green"),
        Task(
            "left-red-right-blue",
            "two-sided map: left half red, right half blue, open captions",
            {"name": "colour-regions", "params": {"parts": [["left", "red"], ["right", "blue"]]}},
            OPEN,
            (("left", "red"), ("right", "blue")),
            keeps_shape=False,
        ),
        Task(
            "shrink-named",
            "segment-shrink: smaller objects, captions name everything",
            {"name": "segment-shrink", "params": {}},
            NAMED,
            measure="object-share",
            sign=-1.0,
            keeps_shape=True,
        ),
    ]
}

# Colour tasks kept out of the suite: the recipe is checked on them after it was chosen.
UNSEEN: dict[str, Task] = {
    t.name: t
    for t in [
        _colour("bottom-right-white", "bottom-right quarter white, open captions", "bottom-right", "white"),
        _colour("bg-yellow", "background yellow (segmenter), open captions", "background", "yellow"),
        _colour("object-cyan", "the object cyan (segmenter), open captions", "object", "cyan"),
        _colour("border-purple", "border purple, open captions", "border", "purple"),
        _colour(
            "bg-yellow-parts",
            "background yellow on 'a red circle' captions without yellow objects, shapes-parts",
            "background",
            "yellow",
            partial("yellow"),
            model="shapes-parts",
        ),
        _colour(
            "top-blue-parts",
            "top half blue on 'a red circle' captions without blue objects, shapes-parts",
            "top",
            "blue",
            partial("blue"),
            model="shapes-parts",
        ),
        _colour(
            "quarter-green-parts",
            "top-left quarter green on 'a red circle' captions without green objects, shapes-parts",
            "top-left",
            "green",
            partial("green"),
            model="shapes-parts",
        ),
        _colour(
            "object-yellow-parts",
            "the object yellow on 'a circle' captions (the shape named, both colours open), shapes-parts",
            "object",
            "yellow",
            {"name": "shapes-world", "params": {"parts": ["shape"]}},
            model="shapes-parts",
        ),
    ]
}


def get_task(name: str) -> Task:
    if name in TASKS:
        return TASKS[name]
    if name in UNSEEN:
        return UNSEEN[name]
    raise UserError(f"unknown task {name!r}; suite tasks: {', '.join(TASKS)}; unseen: {', '.join(UNSEEN)}")


# ---- measures ---------------------------------------------------------------------------------
def region_masks(region, before: torch.Tensor) -> np.ndarray:
    """Bool [B, H, W]: a fixed region, or the object/background of ``before`` as the shipped
    segmenter reads it (the region the reward was given; the evaluator's border-colour rule
    misreads muddy open-caption pictures whose border differs from the background)."""
    b, _, h, w = before.shape
    if region in ("object", "background"):
        from pxpo.testbed.segment import load_segmenter

        obj = (load_segmenter().masks(before.float()) > 0.5).numpy()
        return obj if region == "object" else ~obj
    return np.broadcast_to(region_mask(region, h, w).bool().numpy(), (b, h, w))


def task_region(task: Task, before: torch.Tensor) -> np.ndarray:
    """Bool [B, H, W]: the union of a colour task's regions, read on ``before``."""
    inside = np.zeros(before.shape[:1] + before.shape[2:], dtype=bool)
    for region, _ in task.parts:
        inside |= region_masks(region, before)
    return inside


def target_measure(task: Task, images: torch.Tensor, before: torch.Tensor) -> float:
    """The task's target measure on ``images`` (regions read on ``before``, the same noise)."""
    if task.measure == "object-share":
        return float(evaluate.read_images(images)["object_fraction"].mean())
    classes = colours.classify_colours(colours.as_numpy(images))  # [B, H, W] palette index
    shares = []
    for region, target in task.parts:
        mask = region_masks(region, before)
        hit = classes == world.COLOURS.index(target)
        shares.append(float((hit & mask).sum() / max(mask.sum(), 1)))
    return float(np.mean(shares))


def total_variation(images: torch.Tensor) -> float:
    """Mean absolute difference of neighbouring pixels: [B, 3, H, W] -> float."""
    dx = (images[..., 1:] - images[..., :-1]).abs().mean()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    return float((dx + dy) / 2)


def measures(task: Task, before: torch.Tensor, after: torch.Tensor, prompts: list[str]) -> dict:
    """Everything the suite reports about one run, from its evaluation pictures before and after."""
    out = {"target_before": target_measure(task, before, before), "target_after": target_measure(task, after, before)}
    out["target_gain"] = task.sign * (out["target_after"] - out["target_before"])
    change = (after - before).abs().mean(dim=1).numpy()  # [B, H, W]
    if task.measure == "colour":
        inside = task_region(task, before)
        if (~inside).any():
            out["change_in"] = float(change[inside].mean())
            out["change_out"] = float(change[~inside].mean())
            out["locality"] = out["change_out"] / max(out["change_in"], 1e-8)
    rb, ra = evaluate.read_images(before), evaluate.read_images(after)
    out["shape_kept"] = float(np.mean([a == b for a, b in zip(ra["shape"], rb["shape"])]))
    shape_before = evaluate.caption_accuracy(before, prompts).get("evaluator_shape")
    if shape_before is not None:  # the captions name shapes
        out["shape_acc_before"] = shape_before
        out["shape_acc_after"] = evaluate.caption_accuracy(after, prompts)["evaluator_shape"]
    out["tv_ratio"] = total_variation(after) / max(total_variation(before), 1e-8)
    out["healthy"] = healthy(task, out)
    return out


def healthy(task: Task, m: dict) -> bool:
    """The health rule of the module docstring, from a run's measures."""
    shape_ok = m["shape_kept"] >= 0.75 or not task.keeps_shape or task.captions == "open"
    return bool(shape_ok and 0.5 <= m["tv_ratio"] <= 1.5)


def eval_prompts(run, n: int) -> list[str]:
    """The run's evaluation prompts (as the trainer draws them), or empty captions for other sources."""
    import yaml

    from pxpo.prompts import get_prompts

    cfg = yaml.safe_load((Path(run) / "config.yaml").read_text())
    prompts, _ = get_prompts(cfg["prompts"]["name"], **cfg["prompts"]["params"])(
        n, np.random.default_rng(cfg["eval_seed"])
    )
    return prompts
