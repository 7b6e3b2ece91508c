"""Text conditioning of the UNet for each supported pipeline, and a cache of prompt embeddings.

- ``StableDiffusionPipeline`` (SD 1.x, 2.x): one text encoder; the UNet takes its hidden states.
- ``StableDiffusionXLPipeline``: two text encoders whose penultimate hidden states are concatenated
  ([B, L, 768 + 1280] on SDXL), plus *added conditioning* the UNet needs at every call: the second
  encoder's pooled projection ``text_embeds`` [B, 1280] and ``time_ids`` [B, 6] = (original height,
  width, crop top, crop left, target height, width). Both go to ``unet(..., added_cond_kwargs=...)``
  in sampling and in re-scoring alike, or the re-scored log-probabilities would not be the sampled
  ones.

``encode`` returns ``(cond [B, L, D], uncond [B, L, D], added)`` where ``added`` is ``{}`` for SD and
``{"text_embeds", "negative_text_embeds", "time_ids"}`` ([B, P], [B, P], [B, 6]) for SDXL; the
trajectories keep ``added`` beside the prompt embeddings.
"""

from __future__ import annotations

import torch

TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


def is_sdxl(pipe) -> bool:
    """Two text encoders and a UNet that wants added conditioning: SDXL's architecture."""
    return getattr(pipe, "text_encoder_2", None) is not None and getattr(pipe, "unet", None) is not None


def text_encoders(pipe) -> list[torch.nn.Module]:
    return [m for m in (getattr(pipe, n, None) for n in TEXT_ENCODERS) if m is not None]


def sdxl_time_ids(pipe, height: int, width: int, batch: int) -> torch.Tensor:
    """SDXL's micro-conditioning for uncropped pictures drawn at (height, width): [B, 6] float32."""
    dim = pipe.text_encoder_2.config.projection_dim
    ids = pipe._get_add_time_ids(
        (height, width), (0, 0), (height, width), torch.float32, text_encoder_projection_dim=dim
    )  # [1, 6]; checks the UNet's embedding size
    return ids.expand(batch, -1).clone()


def _encode_uncached(pipe, prompts: list[str], negative: list[str], device) -> tuple[torch.Tensor, ...]:
    """(cond, uncond) and, for SDXL, (pooled, negative_pooled), from the pipeline's own encode_prompt."""
    if is_sdxl(pipe):
        # all-empty negatives: SDXL's own default (zeros when force_zeros_for_empty_prompt), as its pipeline does
        neg = None if not any(negative) else negative
        cond, uncond, pooled, neg_pooled = pipe.encode_prompt(
            prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=neg
        )
        return cond, uncond, pooled, neg_pooled
    cond, uncond = pipe.encode_prompt(prompts, device, 1, True, negative_prompt=negative)
    return cond, uncond


class PromptCache:
    """Precomputed prompt embeddings: each distinct (prompt, negative) pair is encoded once, on the
    device the text encoders sit on (the CPU in pxpo's memory mode, so they never take accelerator
    memory), and its embeddings are kept on the CPU. Later batches assemble theirs from the cache."""

    def __init__(self):
        self.store: dict[tuple[str, str], tuple[torch.Tensor, ...]] = {}
        self.encoded = 0  # prompts run through the text encoders (the tests count them)

    def get(self, pipe, prompts: list[str], negative: list[str]) -> tuple[torch.Tensor, ...]:
        keys = list(zip(prompts, negative))
        todo = list(dict.fromkeys(k for k in keys if k not in self.store))
        if todo:
            device = text_encoders(pipe)[0].device
            parts = _encode_uncached(pipe, [p for p, _ in todo], [n for _, n in todo], device)
            for i, k in enumerate(todo):
                self.store[k] = tuple(x[i].detach().cpu() for x in parts)
            self.encoded += len(todo)
        return tuple(torch.stack([self.store[k][i] for k in keys]) for i in range(len(self.store[keys[0]])))


def encode(
    pipe,
    prompts: list[str],
    negative_prompt: str | list[str] = "",
    height: int | None = None,
    width: int | None = None,
    device=None,
    cache: PromptCache | None = None,
):
    """(cond [B, L, D], uncond [B, L, D], added) on ``device``; see the module doc for ``added``."""
    negative = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
    device = device if device is not None else pipe.unet.device
    if cache is not None:
        parts = cache.get(pipe, list(prompts), negative)
    else:
        parts = _encode_uncached(pipe, list(prompts), negative, text_encoders(pipe)[0].device)
    parts = [p.to(device) for p in parts]
    if not is_sdxl(pipe):
        return parts[0], parts[1], {}
    if height is None or width is None:
        raise ValueError("SDXL's added conditioning needs the picture's height and width")
    added = {
        "text_embeds": parts[2],
        "negative_text_embeds": parts[3],
        "time_ids": sdxl_time_ids(pipe, height, width, len(prompts)).to(device),
    }
    return parts[0], parts[1], added


def unet_added_kwargs(added: dict, cfg_batch: bool, dtype) -> dict:
    """``added_cond_kwargs`` for one UNet call: for a CFG batch [uncond; cond] the negative pooled
    embeddings come first, as in the embeddings; ``{}`` when there is no added conditioning."""
    if not added:
        return {}
    text, ids = added["text_embeds"], added["time_ids"]  # [B, P], [B, 6]
    if cfg_batch:
        text, ids = torch.cat([added["negative_text_embeds"], text]), torch.cat([ids, ids])
    return {"added_cond_kwargs": {"text_embeds": text.to(dtype), "time_ids": ids.to(dtype)}}
