"""The reward interface, the registry of rewards by name, and validation at the boundary.

A reward is a callable ``reward(images, prompts, metadata) -> RewardResult`` where ``images`` is
``[B, 3, H, W]`` in [0, 1], ``prompts`` a list of B strings and ``metadata`` a list of B dicts.
It may return a per-pixel map ``[B, H, W]`` (rich feedback, what PXPO consumes), a scalar ``[B]``
(what DDPO consumes), or both. When only a map is given, the scalar is the map's mean.
A bare tensor return value is accepted too: ``[B]`` is a scalar, ``[B, H, W]`` a map. A map may come
with a ``weight`` [B, H, W] in [0, 1]: where it has an opinion (1) or none (0), as a region reward
has none outside its region; PXPO's advantages then compare a pixel only across samples that have
an opinion there.

Rewards are looked up by name (``get_reward("colour", target="red")``); a user's own is named
``"package.module:function"``, where ``function`` is either a reward or a factory taking the
config's parameters as keywords and returning one.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from pxpo.errors import UserError


@dataclass
class RewardResult:
    map: torch.Tensor | None = None  # [B, H, W] per-pixel reward at image resolution
    scalar: torch.Tensor | None = None  # [B] one reward per image
    info: dict[str, Any] = field(default_factory=dict)  # extra values to log (floats or [B] tensors)
    # [B, H, W] in [0, 1]: where the map has an opinion (None = everywhere). Pixels without one get no
    # credit and do not move the per-pixel baseline (e.g. outside the region of a region reward).
    weight: torch.Tensor | None = None
    # [B, H, W] in [0, 1]: pixels the reward asks to keep as the starting model drew them (e.g. outside
    # the region of colour(outside=keep)); train.kl_region=hold anchors exactly these with the KL.
    hold: torch.Tensor | None = None

    def __post_init__(self):
        if self.map is None and self.scalar is None:
            raise RewardError("a RewardResult needs a map [B, H, W], a scalar [B], or both")
        if self.scalar is None:
            if not isinstance(self.map, torch.Tensor) or self.map.dim() != 3:
                shape = tuple(self.map.shape) if isinstance(self.map, torch.Tensor) else type(self.map).__name__
                raise RewardError(f"a RewardResult map must be a tensor [B, H, W], got {shape}")
            self.scalar = self.map.float().mean(dim=(1, 2))


class Reward(Protocol):
    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult: ...


class RewardError(UserError):
    """A reward is misconfigured or returned something unusable; the message says which and why."""


REGISTRY: dict[str, Callable[..., Reward]] = {}
DESCRIPTIONS: dict[str, str] = {}


def register(name: str, description: str = ""):
    """Decorator registering a reward factory (keyword parameters -> reward callable) under ``name``."""

    def deco(factory):
        REGISTRY[name] = factory
        DESCRIPTIONS[name] = description or (inspect.getdoc(factory) or "").split("\n")[0]
        return factory

    return deco


def available() -> dict[str, str]:
    """Registered reward names with their one-line descriptions."""
    _load_builtins()
    return dict(sorted(DESCRIPTIONS.items()))


def _load_builtins() -> None:
    # Importing the package registers the shipped rewards; the plugins register theirs (segment-*).
    importlib.import_module("pxpo.rewards")
    from pxpo import plugins

    plugins.load()


def get_reward(name: str, **params) -> Reward:
    """Build reward ``name`` (registered name or ``module:function``) with ``params``."""
    _load_builtins()
    if name in REGISTRY:
        factory = REGISTRY[name]
    elif ":" in name:
        from pxpo.plugins import load_object

        factory = load_object(name, "reward", RewardError)
        if not params and _looks_like_reward(factory):
            return _named(factory, name)
    else:
        raise RewardError(
            f"unknown reward {name!r}; registered rewards: {', '.join(sorted(REGISTRY))}; "
            "or give your own as 'package.module:function'"
        )
    try:
        reward = factory(**params)
    except TypeError as e:
        raise RewardError(f"reward {name!r} does not take these parameters {sorted(params)}: {e}") from None
    return _named(reward, name)


def _looks_like_reward(fn) -> bool:
    try:
        return len(inspect.signature(fn).parameters) >= 3
    except (TypeError, ValueError):
        return False


def _named(reward, name: str):
    try:
        reward.reward_name = name
    except AttributeError:
        pass
    return reward


def needs_reference(reward: Any) -> bool:
    """Whether a reward reads ``metadata[i]["reference"]`` (the frozen starting model's image for
    the same prompt and noise). A reward says so with an attribute ``needs_reference = True``;
    wrappers (validation, composition, async scoring) pass it on."""
    return bool(getattr(reward, "needs_reference", False))


def validate(result: Any, name: str, images: torch.Tensor) -> RewardResult:
    """Check a reward's output against the batch; raise RewardError naming the reward otherwise."""
    b, _, h, w = images.shape
    if isinstance(result, torch.Tensor):
        if result.dim() == 1:
            result = RewardResult(scalar=result)
        elif result.dim() == 3:
            result = RewardResult(map=result)
        else:
            raise RewardError(
                f"reward {name!r} returned a tensor of shape {tuple(result.shape)}; "
                f"expected a scalar [B]=[{b}] or a map [B, H, W]=[{b}, {h}, {w}]"
            )
    if not isinstance(result, RewardResult):
        raise RewardError(
            f"reward {name!r} returned {type(result).__name__}; expected a RewardResult "
            "or a tensor ([B] scalar or [B, H, W] map)"
        )
    checks = [
        ("map", result.map, (b, h, w)),
        ("scalar", result.scalar, (b,)),
        ("weight", result.weight, (b, h, w)),
        ("hold", result.hold, (b, h, w)),
    ]
    for what, t, shape in checks:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise RewardError(f"reward {name!r}: {what} is {type(t).__name__}, expected a torch.Tensor")
        if tuple(t.shape) != shape:
            raise RewardError(
                f"reward {name!r}: {what} has shape {tuple(t.shape)}, expected {list(shape)} "
                "(batch, and the images' height and width for maps)"
            )
        if not t.is_floating_point():
            raise RewardError(f"reward {name!r}: {what} has dtype {t.dtype}, expected a floating dtype")
        if t.device != images.device:
            raise RewardError(f"reward {name!r}: {what} is on {t.device}, the images are on {images.device}")
        if not torch.isfinite(t).all():
            bad = (~torch.isfinite(t)).sum().item()
            raise RewardError(f"reward {name!r}: {what} holds {bad} NaN or inf values")
    if result.weight is not None:
        if result.map is None:
            raise RewardError(f"reward {name!r}: a weight needs a map to weigh; return map= with it")
        if result.weight.min() < 0 or result.weight.max() > 1:
            raise RewardError(f"reward {name!r}: weight must lie in [0, 1] (1 = the map has an opinion there)")
    if result.hold is not None and (result.hold.min() < 0 or result.hold.max() > 1):
        raise RewardError(f"reward {name!r}: hold must lie in [0, 1] (1 = keep this pixel as it was)")
    return result
