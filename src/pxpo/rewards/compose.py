"""Building rewards from configs: validated single rewards, weighted sums, and asynchronous scoring.

``build_reward(spec, params=None)`` is the one entry point a trainer needs:

- ``build_reward("colour", {"target": "red"})``: one reward by name (registered or ``module:function``)
  with its keyword parameters;
- ``build_reward({"name": "colour", "params": {"target": "red"}})``: the same as one dict;
- ``build_reward({"colour": 1.0, "jpeg-compressibility-map": 0.5}, {"colour": {"target": "red"}})``:
  a weighted sum (:func:`compose`); ``params`` maps a component's name to its parameters.

Every reward it returns checks its output with :func:`~pxpo.rewards.base.validate` on every call,
so a broken user reward fails with an error that names it.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from numbers import Real
from typing import Any, Mapping

import torch

from pxpo.rewards.base import Reward, RewardError, RewardResult, get_reward, needs_reference, register, validate


class Validated:
    """A reward whose every output is checked by ``validate`` under its name."""

    def __init__(self, reward: Reward, name: str):
        self.reward, self.reward_name = reward, name
        self.needs_reference = needs_reference(reward)

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult:
        try:
            result = self.reward(images, prompts, metadata)
        except RewardError as e:
            if f"{self.reward_name!r}" in str(e):
                raise
            raise RewardError(f"reward {self.reward_name!r}: {e}") from e
        except Exception as e:  # a user's reward that raises: one line naming it (`--debug` shows the traceback)
            raise RewardError(f"reward {self.reward_name!r} raised {type(e).__name__}: {e}") from e
        return validate(result, self.reward_name, images)

    def __repr__(self) -> str:
        return f"Validated({self.reward_name!r})"


def _component_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise RewardError(f"a reward name must be a non-empty string, got {name!r}")
    return name


class Composite:
    """Weighted sum of rewards: ``r = Σ_k w_k r_k`` (see :func:`compose`)."""

    def __init__(self, weights: Mapping[str, float], params: Mapping[str, Mapping] | None = None):
        params = dict(params or {})
        if not weights:
            raise RewardError("compose needs at least one reward in weights, e.g. {'colour': 1.0}")
        unknown = sorted(set(params) - set(weights))
        if unknown:
            raise RewardError(
                f"compose: params given for {unknown}, which are not in weights "
                f"{sorted(weights)}; add them to weights or remove their params"
            )
        self.weights: dict[str, float] = {}
        self.components: dict[str, Validated] = {}
        for name, w in weights.items():
            name = _component_name(name)
            if isinstance(w, bool) or not isinstance(w, Real) or not math.isfinite(w):
                raise RewardError(f"compose: weight of {name!r} is {w!r}; expected a finite number")
            p = params.get(name, {})
            if not isinstance(p, Mapping):
                raise RewardError(f"compose: params of {name!r} must be a dict of keyword parameters, got {p!r}")
            self.weights[name] = float(w)
            self.components[name] = Validated(get_reward(name, **p), name)
        self.needs_reference = any(needs_reference(r) for r in self.components.values())
        self.reward_name = "compose(" + ", ".join(f"{w:g}*{n}" for n, w in self.weights.items()) + ")"

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult:
        results = {n: r(images, prompts, metadata) for n, r in self.components.items()}
        scalar = sum(self.weights[n] * res.scalar.float() for n, res in results.items())
        maps = [res.map for res in results.values()]
        rmap = weight = None
        if all(m is not None for m in maps):
            rmap = sum(self.weights[n] * res.map.float() for n, res in results.items())
            if all(res.weight is not None for res in results.values()):  # an opinion where any component has one
                weight = torch.stack([res.weight.float() for res in results.values()]).amax(dim=0)
        info: dict[str, Any] = {}
        for n, res in results.items():
            info[n] = float(res.scalar.float().mean())
            for key, value in res.info.items():
                info[f"{n}/{key}"] = value
        holds = [res.hold.float() for res in results.values() if res.hold is not None]
        hold = torch.stack(holds).amax(dim=0) if holds else None  # what any component asks to keep
        return RewardResult(map=rmap, scalar=scalar, info=info, weight=weight, hold=hold)


@register("compose", "Weighted sum of rewards: params weights={name: w}, params={name: {...}}")
def compose(weights: Mapping[str, float], params: Mapping[str, Mapping] | None = None) -> Composite:
    """Weighted sum of named rewards.

    ``scalar = Σ_k w_k scalar_k``; ``map = Σ_k w_k map_k`` only when every component gives a map
    (otherwise the composite is scalar-only: a map cannot be made up for a scalar reward).
    ``info["<name>"]`` is component k's batch-mean scalar; its own info keys appear as
    ``"<name>/<key>"``. ``params[name]`` holds component ``name``'s keyword parameters.
    """
    return Composite(weights, params)


def build_reward(spec, params: Mapping | None = None) -> Reward:
    """A validated reward from a config (see the module docstring for the three forms).

    spec: a name (``params`` = its keyword parameters); or ``{"name": ..., "params": {...}}``
    (``params`` must then be None); or a weights dict ``{name: weight}`` (``params`` =
    ``{name: {...}}``). A reward callable is accepted too and just wrapped with validation.
    """
    if isinstance(spec, str):
        return Validated(get_reward(spec, **dict(params or {})), spec)
    if isinstance(spec, Mapping) and "name" in spec and isinstance(spec["name"], str):
        extra = sorted(set(spec) - {"name", "params"})
        if extra or params is not None:
            raise RewardError(
                f"reward spec {dict(spec)!r}: a {{'name': ..., 'params': {{...}}}} spec takes "
                f"no other keys{' (found ' + str(extra) + ')' if extra else ''} and no "
                "separate params argument"
            )
        return build_reward(spec["name"], spec.get("params") or {})
    if isinstance(spec, Mapping):
        composite = Composite(spec, params)
        return Validated(composite, composite.reward_name)
    if callable(spec):
        return Validated(spec, getattr(spec, "reward_name", getattr(spec, "__name__", repr(spec))))
    raise RewardError(
        f"cannot build a reward from {spec!r}; give a name such as 'colour', "
        "{'name': 'colour', 'params': {...}}, or weights such as {'colour': 1.0}"
    )


class AsyncReward:
    """Score batches in a background thread: ``submit`` returns a Future of a validated result.

    Lets a trainer score batch k while it samples batch k+1. The images are cloned on submission,
    so the caller may reuse its buffers. Use as a context manager, or call ``close()``.
    """

    def __init__(self, reward: Reward, max_workers: int = 1, name: str | None = None):
        self.reward = reward
        self.reward_name = name or getattr(reward, "reward_name", getattr(reward, "__name__", "reward"))
        self.needs_reference = needs_reference(reward)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="pxpo-reward")

    def _score(self, images, prompts, metadata) -> RewardResult:
        with torch.no_grad():
            return validate(self.reward(images, prompts, metadata), self.reward_name, images)

    def submit(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> Future:
        """Start scoring; ``.result()`` gives the RewardResult or raises the reward's error."""
        return self._pool.submit(self._score, images.detach().clone(), list(prompts), list(metadata))

    def __call__(self, images, prompts, metadata) -> RewardResult:
        return self.submit(images, prompts, metadata).result()

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)

    def __enter__(self) -> "AsyncReward":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
