"""``hf-segment``: per-pixel rewards from any transformers semantic-segmentation model.

Any checkpoint that ``AutoModelForSemanticSegmentation`` + ``AutoImageProcessor`` load
(SegFormer, BEiT, DPT, MobileViT, UperNet, ...) works, given as a local directory or a hub id.
Per pixel::

    map[b, y, x] = sum_k  weight_k * P(label_k | image_b)[y, x]

where P is the softmax over classes of the model's logits, bilinearly upsampled to the image's
height and width first (as ``post_process_semantic_segmentation`` does). E.g.
``labels={"person": 1.0, "sky": -0.5}`` pays for person pixels and charges for sky pixels.

Nothing is downloaded unless ``local_files_only=False``; then the hub's usual cache is used.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pxpo.rewards.base import RewardError, RewardResult, register


def load_hf_segmenter(model: str, local_files_only: bool = True):
    """(processor, model in eval mode) for ``model`` (directory or hub id); clear error if absent."""
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    try:
        processor = AutoImageProcessor.from_pretrained(model, local_files_only=local_files_only)
        net = AutoModelForSemanticSegmentation.from_pretrained(model, local_files_only=local_files_only)
    except (OSError, ValueError) as e:
        hint = (
            (
                " Downloads are off: put the files in a local directory (config.json, the weights and "
                "preprocessor_config.json) and give its path, or pass local_files_only=False to fetch "
                f"{model!r} from the Hugging Face hub."
            )
            if local_files_only
            else ""
        )
        raise RewardError(
            f"hf-segment: cannot load a semantic-segmentation model from {model!r} "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}).{hint}"
        ) from None
    return processor, net.eval()


def resolve_labels(labels: dict, id2label: dict[int, str]) -> dict[int, float]:
    """``{name or id: weight}`` -> ``{class id: weight}``; names match case-insensitively.

    Raises RewardError naming an unknown label and listing the model's labels.
    """
    if not isinstance(labels, dict) or not labels:
        raise RewardError(
            "hf-segment: labels must be a non-empty mapping {label name or id: weight}, "
            "e.g. {'person': 1.0, 'sky': -0.5}"
        )
    by_name = {str(name).lower(): int(i) for i, name in id2label.items()}
    out: dict[int, float] = {}
    for key, weight in labels.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise RewardError(f"hf-segment: weight of label {key!r} is {weight!r}; expected a number")
        if isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit() and key.lower() not in by_name):
            idx = int(key)
            if idx not in id2label:
                raise RewardError(
                    f"hf-segment: label id {idx} is out of range: the model has ids 0..{len(id2label) - 1}"
                )
        elif str(key).lower() in by_name:
            idx = by_name[str(key).lower()]
        else:
            names = [str(id2label[i]) for i in sorted(id2label)]
            shown = ", ".join(names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
            raise RewardError(f"hf-segment: unknown label {key!r}; the model's labels are: {shown}")
        out[idx] = out.get(idx, 0.0) + float(weight)
    return out


def class_probs(processor, net, images: torch.Tensor) -> torch.Tensor:
    """Per-pixel class probabilities [B, K, H, W] at the images' own size; images [B, 3, H, W] in [0, 1]."""
    b, _, h, w = images.shape
    arr = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    inputs = processor(images=[np.ascontiguousarray(a) for a in arr], return_tensors="pt")
    device = next(net.parameters()).device
    with torch.no_grad():
        logits = net(pixel_values=inputs["pixel_values"].to(device)).logits  # [B, K, h', w']
    logits = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
    return logits.softmax(dim=1).to(images.device)


@register("hf-segment", "Weighted per-pixel class probabilities of a transformers segmentation model")
def hf_segment(model: str = "", labels: dict | None = None, local_files_only: bool = True, device: str | None = None):
    """``map = sum_k weight_k * P(label_k)`` per pixel (module docstring).

    model: local directory or hub id of a semantic-segmentation checkpoint.
    labels: ``{label name or class id: weight}``, e.g. ``{"person": 1.0, "sky": -0.5}``.
    local_files_only: True (default) never downloads.
    device: where the model runs (default: the images' device, moved on first call).
    info: ``p_<label>`` [B] = mean probability of each chosen label.
    """
    if not model:
        raise RewardError(
            "hf-segment needs model=DIR_OR_HUB_ID (a semantic-segmentation checkpoint, e.g. a SegFormer directory)"
        )
    processor, net = load_hf_segmenter(model, local_files_only)
    id2label = {int(k): v for k, v in net.config.id2label.items()}
    weights = resolve_labels(labels or {}, id2label)
    ids = sorted(weights)
    w = torch.tensor([weights[i] for i in ids])  # [L]
    if device is not None:
        net.to(device)

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> RewardResult:
        if device is None:
            net.to(images.device)
        p = class_probs(processor, net, images)[:, ids]  # [B, L, H, W]
        rmap = (p * w.to(p)[None, :, None, None]).sum(dim=1).to(images.dtype)  # [B, H, W]
        info = {f"p_{id2label[i]}": p[:, j].mean(dim=(1, 2)) for j, i in enumerate(ids)}
        return RewardResult(map=rmap, info=info)

    return reward
