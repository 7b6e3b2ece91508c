"""Rewards: per-pixel maps and scalars, looked up by name. See :mod:`pxpo.rewards.base`."""

from pxpo.rewards.base import (
    REGISTRY,
    Reward,
    RewardError,
    RewardResult,
    available,
    get_reward,
    needs_reference,
    register,
    validate,
)

# Importing these modules registers the shipped rewards.
from pxpo.rewards import boxes, colour, compose, compress  # noqa: E402,F401  (modules; names below)
from pxpo.rewards import hf_segment  # noqa: E402,F401  (registers hf-segment)
from pxpo.rewards.colour import parse_colour, region_mask, srgb_to_lab
from pxpo.rewards.compose import AsyncReward, build_reward
from pxpo.rewards.compress import jpeg_cost_map, jpeg_kb

__all__ = [
    "REGISTRY",
    "Reward",
    "RewardError",
    "RewardResult",
    "available",
    "get_reward",
    "register",
    "needs_reference",
    "validate",
    "AsyncReward",
    "build_reward",
    "jpeg_cost_map",
    "jpeg_kb",
    "parse_colour",
    "region_mask",
    "srgb_to_lab",
]
