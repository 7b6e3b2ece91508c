"""A user's own rewards, as docs/howto/custom-reward.md shows them: ``PYTHONPATH=examples pxpo train --reward.name=custom_rewards:warm_left``."""

import torch

from pxpo.rewards.base import RewardResult


def warm_left(images, prompts, metadata):
    """Red over green and blue, per pixel, on the left half; no opinion on the right half."""
    redness = images[:, 0] - images[:, 1:].mean(dim=1)  # [B, H, W]
    left = torch.zeros_like(redness)
    left[..., : images.shape[-1] // 2] = 1.0
    return RewardResult(map=redness * left, weight=left, info={"redness_left": (redness * left).mean(dim=(1, 2))})


def make_colour_on_left(target: str = "red"):
    """A factory: ``reward.params`` arrive as keywords, and it returns the reward."""
    rgb = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}[target]

    def reward(images, prompts, metadata):
        target_rgb = torch.tensor(rgb, device=images.device).view(1, 3, 1, 1)
        closeness = 1.0 - (images - target_rgb).abs().mean(dim=1)  # [B, H, W] in [0, 1]
        left = torch.zeros_like(closeness)
        left[..., : images.shape[-1] // 2] = 1.0
        return RewardResult(map=closeness, weight=left)

    return reward
