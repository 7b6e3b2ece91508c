"""The shapes testbed's plugin: what it registers by name when the core's registries load it
(:mod:`pxpo.plugins`).

- the prompt source ``shapes-world``;
- the segmenter rewards ``segment-*`` (:mod:`pxpo.testbed.segment.reward`);
- the models ``shapes-tiny`` and ``shapes-parts`` (``--model.name``). ``shapes-parts`` is
  shapes-tiny trained 3500 steps more with each part of a caption dropped (``pretrain_log.json`` in
  its folder holds the two ``pxpo pretrain`` commands), so it also draws partial captions such as
  "a red circle"; ``pxpo train`` starts from it by default;
- the model ``shapes-flow``: SD3's architecture trained by rectified flow on the shapes world
  (:mod:`pxpo.testbed.embedded_flow`; its ``pretrain_log.json`` holds the command), the flow backends'
  embedded model;
- the model ``shapes-scenes-flow``: the same architecture trained on the scenes world, with
  ``shapes-scenes``' VAE and tokenizer and its text encoder as the start of both of its own (its
  ``pretrain_log.json`` holds the command);
- the world of those models: their vocabulary, and the evaluator's reading of the parts a caption
  names, which ``pxpo train`` logs with each evaluation;
- the scenes world (:mod:`pxpo.testbed.scenes`): the prompt source ``scenes``, the reward
  ``scene-parts`` (:mod:`pxpo.testbed.scene_rewards`), the model ``shapes-scenes`` and its world
  (:mod:`pxpo.testbed.scene_judge`).
"""

from __future__ import annotations

from pathlib import Path

from pxpo.backends.registry import ModelWorld, register_model, register_world, run_base_model
from pxpo.prompts import PromptSource, register
from pxpo.testbed import evaluate, scene_judge, scenes, world
from pxpo.testbed import scene_rewards as _scene_rewards  # noqa: F401  (registers scene-parts)
from pxpo.testbed.segment import reward as _segment_rewards  # noqa: F401  (registers segment-*)
from pxpo.errors import ConfigError

WEIGHTS = Path(__file__).resolve().parent / "weights"
MODELS = {
    "shapes-tiny": WEIGHTS / "shapes-tiny",
    "shapes-parts": WEIGHTS / "shapes-parts",
    "shapes-scenes": WEIGHTS / "shapes-scenes",
    "shapes-flow": WEIGHTS / "shapes-flow",
    "shapes-scenes-flow": WEIGHTS / "shapes-scenes-flow",
}
for _name, _path in MODELS.items():
    register_model(_name, _path)


@register("shapes-world")
def shapes_world(
    split: str = "train", combos: list | None = None, parts: list | None = None, exclude_colours: list | None = None
) -> PromptSource:
    """Random captions of the shapes world (``split``: train, heldout or all), or of given combos.

    ``parts``: the parts a caption names (default all three: "a red circle on a blue background");
    ``[colour, shape]`` gives "a red circle", the background left to the model (the distinct
    captions of the split are drawn alike). ``exclude_colours``: object colours left out, e.g. the
    colour a reward asks the background to take. Metadata: each part, None where left open."""
    parts = tuple(world.PARTS if parts is None else parts)
    bad = [c for c in exclude_colours or () if c not in world.COLOURS]
    if bad:
        raise ConfigError(f"shapes-world exclude_colours {bad}: colours are {', '.join(world.COLOURS)}")
    pool = [tuple(c) for c in combos] if combos else world.combinations(split)
    pool = [c for c in pool if c[1] not in (exclude_colours or ())]
    if parts != world.PARTS:  # the distinct partial captions, in the split's order
        try:
            pool = world.partial_combinations(pool, parts)
        except ValueError as e:
            raise ConfigError(f"shapes-world {e}") from None
    if not pool:
        raise ConfigError("shapes-world: no caption is left after exclude_colours; exclude fewer colours")

    def source(n, rng):
        picks = [pool[i] for i in rng.integers(0, len(pool), size=n)]
        meta = [dict(zip(world.PARTS, p)) for p in picks]
        return [world.partial_caption(*p) for p in picks], meta

    return source


@register("scenes")
def scenes_prompts(
    named: list | None = None,
    attributes: list | None = None,
    split: str = "train",
    exclude_colours: list | None = None,
    min_objects: int = 1,
) -> PromptSource:
    """Captions of drawn scenes naming only ``named`` (of objects, sky, ground; default all) and, of each
    object, only ``attributes`` (of size, colour, shape; default all): ``{named: [objects, ground]}`` leaves
    the sky to the model. ``exclude_colours``: no object of these colours (a reward's target);
    ``min_objects``: at least this many objects. Metadata: the named sky, ground and object colours."""
    kw = scenes.prompt_options(named, attributes, split, exclude_colours, min_objects)
    try:
        scenes.captions(1, __import__("numpy").random.default_rng(0), **kw)  # fail now on bad parameters
    except ValueError as e:
        raise ConfigError(f"scenes prompts: {e}") from None

    def source(n, rng):
        texts, drawn = scenes.captions(n, rng, **kw)
        return texts, [scene_judge.parse_caption(t) for t in texts]

    return source


def model_world(name_or_path: str) -> str | None:
    """'scenes' or 'shapes' for a model of this testbed (shipped, pretrained here, or fine-tuned from
    one), from the world its ``pxpo pretrain`` log names; None for any other model."""
    path = Path(name_or_path)
    base = run_base_model(name_or_path) or (run_base_model(str(path.parent)) if path.name == "weights" else None)
    if base is not None and base != name_or_path:
        return model_world(base)
    if name_or_path in MODELS:
        path = MODELS[name_or_path]
    log = path / "pretrain_log.json"
    if not (log.is_file() and (path / "model_index.json").is_file()):
        return None
    import json

    data = json.loads(log.read_text())
    config = data.get("config") or (data.get("stages") or [{}])[-1].get("config", {})
    return config.get("world", "shapes")


def is_shapes_model(name_or_path: str) -> bool:
    """A shipped shapes model (``MODELS``), a model ``pxpo pretrain`` wrote (its folder holds pretrain_log.json),
    or a run folder (or its weights/) fine-tuned from one of them: all know only the shapes world's
    words, and all are small enough to train every weight."""
    path = Path(name_or_path)
    base = run_base_model(name_or_path) or (run_base_model(str(path.parent)) if path.name == "weights" else None)
    if base is not None and base != name_or_path:
        return is_shapes_model(base)
    if (path / "pretrain_log.json").is_file() and (path / "model_index.json").is_file():
        return True
    return name_or_path in MODELS or any(path.resolve() == p.resolve() for p in MODELS.values())


register_world(
    ModelWorld(
        recognise=lambda m: model_world(m) == "scenes",
        check_prompts=scenes.check_vocabulary,
        judge=lambda images, prompts: {f"scene_{k}": v for k, v in scene_judge.judge(images, prompts).items()},
        name="scenes",
    )
)
register_world(
    ModelWorld(
        recognise=is_shapes_model, check_prompts=world.check_vocabulary, judge=evaluate.caption_accuracy, name="shapes"
    )
)
