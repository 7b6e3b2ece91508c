"""JPEG (in)compressibility, as in DDPO, and per-pixel versions of it.

Scalar (DDPO): the size in kB (1000 bytes) of the image saved by Pillow as JPEG at quality 95,
negated for ``jpeg-compressibility`` and positive for ``jpeg-incompressibility``.

Per-pixel map (``-map`` variants): an estimate of the coding cost of each 8x8 JPEG block, spread
evenly over the pixels it covers. The estimate follows the baseline JPEG pipeline Pillow/libjpeg
runs at quality 95 with 4:2:0 chroma subsampling:

1. uint8 RGB -> YCbCr (JFIF); Cb and Cr averaged over 2x2 pixels; level shift by -128;
2. 8x8 DCT-II of every block; quantise ``round(F / Q)`` with the IJG tables scaled for the quality
   (``scale = 5000/q`` below 50, ``200 - 2q`` above; ``Q = clamp((base * scale + 50) // 100, 1, 255)``);
3. count the bits of baseline Huffman coding with the tables libjpeg writes (the standard tables of
   JPEG Annex K, read here from the DHT segments of a JPEG that Pillow encodes):
   DC: ``len_dc[s] + s`` for the difference to the previous block's DC (in scan order), where
   ``s`` is the magnitude category (bit length of |diff|); AC, per nonzero coefficient in zigzag
   order after a run of r zeros: ``len_ac[ZRL] * (r // 16) + len_ac[(r % 16) << 4 | s] + s``,
   plus ``len_ac[EOB]`` when the block ends in zeros.

A luma block's bits are spread over its 8x8 pixels, a chroma block's over its 16x16 pixels. The map
is in kB per pixel: its sum over an image (mean x H x W) is the estimated size of the coded data in
kB, which is the file size less Pillow's ~0.6 kB of headers (and byte stuffing, ignored). The map
rewards' scalar is still DDPO's exact file size, so DDPO and PXPO runs report the same number.
Sizes that are not multiples of 16 are edge-padded, which only approximates libjpeg's dummy blocks.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pxpo.images import to_uint8
from pxpo.rewards.base import RewardError, RewardResult, register

QUALITY = 95  # DDPO's setting

# IJG base quantisation tables (JPEG Annex K.1), natural (row-major) order.
LUMA_BASE = (
    16,
    11,
    10,
    16,
    24,
    40,
    51,
    61,
    12,
    12,
    14,
    19,
    26,
    58,
    60,
    55,
    14,
    13,
    16,
    24,
    40,
    57,
    69,
    56,
    14,
    17,
    22,
    29,
    51,
    87,
    80,
    62,
    18,
    22,
    37,
    56,
    68,
    109,
    103,
    77,
    24,
    35,
    55,
    64,
    81,
    104,
    113,
    92,
    49,
    64,
    78,
    87,
    103,
    121,
    120,
    101,
    72,
    92,
    95,
    98,
    112,
    100,
    103,
    99,
)
CHROMA_BASE = (
    17,
    18,
    24,
    47,
    99,
    99,
    99,
    99,
    18,
    21,
    26,
    66,
    99,
    99,
    99,
    99,
    24,
    26,
    56,
    99,
    99,
    99,
    99,
    99,
    47,
    66,
    99,
    99,
    99,
    99,
    99,
    99,
) + (99,) * 32


def jpeg_bytes(image: np.ndarray, quality: int = QUALITY) -> int:
    """Size in bytes of one uint8 [H, W, 3] image saved by Pillow as JPEG at ``quality``."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.tell()


def jpeg_kb(images: torch.Tensor, quality: int = QUALITY) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> [B] JPEG file sizes in kB (bytes / 1000), as DDPO computes them."""
    sizes = [jpeg_bytes(a, quality) / 1000.0 for a in to_uint8(images)]
    return torch.tensor(sizes, dtype=torch.float32, device=images.device)


def quant_table(base, quality: int = QUALITY) -> torch.Tensor:
    """IJG quality scaling of a base table -> [8, 8] quantisation steps."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    q = [min(max((b * scale + 50) // 100, 1), 255) for b in base]
    return torch.tensor(q, dtype=torch.float32).view(8, 8)


@lru_cache(maxsize=1)
def zigzag() -> torch.Tensor:
    """[64] natural-order indices of the JPEG zigzag scan."""
    cells = [(i, j) for i in range(8) for j in range(8)]
    cells.sort(key=lambda c: (c[0] + c[1], c[0] if (c[0] + c[1]) % 2 else -c[0]))
    return torch.tensor([i * 8 + j for i, j in cells])


@lru_cache(maxsize=1)
def dct_matrix() -> torch.Tensor:
    """[8, 8] orthonormal DCT-II: ``F = D f D^T`` is JPEG's forward DCT."""
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * torch.pi / 16) * 0.5
    d[0] /= 2**0.5
    return d.float()


@lru_cache(maxsize=1)
def huffman_lengths() -> dict[tuple[int, int], torch.Tensor]:
    """Code lengths [256] (by symbol; 16 where absent) of the Huffman tables in Pillow's JPEGs.

    Keys (class, table): (0, 0) luma DC, (0, 1) chroma DC, (1, 0) luma AC, (1, 1) chroma AC.
    """
    data = io.BytesIO()
    Image.new("RGB", (16, 16)).save(data, format="JPEG", quality=QUALITY)
    data = data.getvalue()
    tables, i = {}, 2
    while i + 4 <= len(data) and data[i] == 0xFF and data[i + 1] != 0xDA:
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if data[i + 1] == 0xC4:  # DHT: repeated (Tc<<4|Th, 16 counts, symbols)
            j, end = i + 4, i + 2 + length
            while j < end:
                key, counts = (data[j] >> 4, data[j] & 15), data[j + 1 : j + 17]
                lengths, j = torch.full((256,), 16.0), j + 17
                for bits, count in enumerate(counts, start=1):
                    for sym in data[j : j + count]:
                        lengths[sym] = bits
                    j += count
                tables[key] = lengths
        i += 2 + length
    if len(tables) != 4:
        raise RuntimeError(f"expected 4 Huffman tables in Pillow's JPEG, found {sorted(tables)}")
    return tables


def category(x: torch.Tensor) -> torch.Tensor:
    """JPEG magnitude category: bit length of |x| (0 for 0), exactly, for |x| < 2**15."""
    a = x.abs()
    return sum((a >= 2**k).float() for k in range(15))


def _blocks(plane: torch.Tensor) -> torch.Tensor:
    """[B, H, W] (H, W multiples of 8) -> [B, H/8, W/8, 64] blocks in natural order."""
    b, h, w = plane.shape
    return plane.view(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4).reshape(b, h // 8, w // 8, 64)


def quantised_blocks(plane: torch.Tensor, qtable: torch.Tensor) -> torch.Tensor:
    """Level-shifted samples [B, H, W] -> quantised DCT coefficients [B, H/8, W/8, 64], zigzag order."""
    blocks = _blocks(plane).unflatten(-1, (8, 8))  # [B, by, bx, 8, 8]
    d = dct_matrix().to(plane)
    coef = d @ blocks @ d.T
    return torch.round(coef / qtable.to(plane)).flatten(-2)[..., zigzag().to(plane.device)]


def ac_bits(zz: torch.Tensor, ac_len: torch.Tensor) -> torch.Tensor:
    """Huffman bits of the AC coefficients: zz [..., 64] zigzag -> [...] (see module docstring)."""
    ac = zz[..., 1:]  # [..., 63]
    nz = ac != 0
    pos = torch.arange(1, 64, device=zz.device).expand_as(ac)
    last = torch.where(nz, pos, torch.zeros_like(pos)).cummax(dim=-1).values  # last nonzero at or before
    prev = torch.cat([torch.zeros_like(last[..., :1]), last[..., :-1]], dim=-1)  # strictly before
    run = pos - prev - 1
    size = category(ac)
    symbol = ((run % 16) * 16 + size.long()).clamp(0, 255)
    bits = ac_len[0xF0] * (run // 16) + ac_len[symbol] + size
    total = (bits * nz).sum(dim=-1)
    return total + ac_len[0x00] * (last[..., -1] < 63)  # EOB when the block ends in zeros


def dc_bits(dc: torch.Tensor, dc_len: torch.Tensor, group: int) -> torch.Tensor:
    """DC bits of blocks dc [B, by, bx], predicted in scan order: MCUs of ``group``x``group`` blocks
    in raster order, blocks within an MCU in raster order (group 2 for 4:2:0 luma, 1 for chroma)."""
    b, by, bx = dc.shape
    g = dc.view(b, by // group, group, bx // group, group).permute(0, 1, 3, 2, 4)
    flat = g.reshape(b, -1)
    diff = flat - torch.cat([torch.zeros_like(flat[:, :1]), flat[:, :-1]], dim=1)
    size = category(diff)
    bits = (dc_len[size.long()] + size).view(b, by // group, bx // group, group, group)
    return bits.permute(0, 1, 3, 2, 4).reshape(b, by, bx)


def block_bits(images: torch.Tensor, quality: int = QUALITY) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimated bits per luma block [B, Hp/8, Wp/8] and per chroma block pair (Cb + Cr)
    [B, Hp/16, Wp/16], for images [B, 3, H, W] in [0, 1] edge-padded to multiples of 16."""
    x = torch.round(images.detach().float().clamp(0, 1) * 255)
    h, w = x.shape[-2:]
    x = F.pad(x, (0, -w % 16, 0, -h % 16), mode="replicate")
    r, g, b = x.unbind(dim=1)
    y = torch.round(0.299 * r + 0.587 * g + 0.114 * b)
    cb = torch.round(-0.168736 * r - 0.331264 * g + 0.5 * b + 128)
    cr = torch.round(0.5 * r - 0.418688 * g - 0.081312 * b + 128)
    cb, cr = (torch.round(F.avg_pool2d(c[:, None], 2)[:, 0]) for c in (cb, cr))  # 4:2:0
    tables = {k: v.to(x.device) for k, v in huffman_lengths().items()}
    lq, cq = quant_table(LUMA_BASE, quality), quant_table(CHROMA_BASE, quality)
    zy = quantised_blocks(y - 128, lq)
    luma = ac_bits(zy, tables[(1, 0)]) + dc_bits(zy[..., 0], tables[(0, 0)], 2)
    chroma = 0
    for c in (cb, cr):
        zc = quantised_blocks(c - 128, cq)
        chroma = chroma + ac_bits(zc, tables[(1, 1)]) + dc_bits(zc[..., 0], tables[(0, 1)], 1)
    return luma, chroma


def _spread(cost: torch.Tensor, k: int, h: int, w: int) -> torch.Tensor:
    """Per-block cost [B, by, bx] of k x k blocks -> [B, h, w], each block's cost shared evenly by
    its pixels inside the h x w image (padding pixels get none, so totals are kept)."""
    count_y = (h - torch.arange(cost.shape[1], device=cost.device) * k).clamp(0, k)  # [by]
    count_x = (w - torch.arange(cost.shape[2], device=cost.device) * k).clamp(0, k)  # [bx]
    per_pixel = cost / (count_y[:, None] * count_x[None, :]).clamp_min(1)
    full = per_pixel.repeat_interleave(k, dim=1).repeat_interleave(k, dim=2)
    return full[:, :h, :w]


def jpeg_cost_map(images: torch.Tensor, quality: int = QUALITY) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> [B, H, W] estimated coded size in kB per pixel (sums to kB)."""
    h, w = images.shape[-2:]
    luma, chroma = block_bits(images, quality)
    bits = _spread(luma, 8, h, w) + _spread(chroma, 16, h, w)
    return (bits / 8000.0).to(images.dtype)


def _check_quality(quality) -> int:
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise RewardError(f"JPEG quality must be an integer 1..100 (DDPO uses 95), got {quality!r}")
    return quality


def _scalar_reward(sign: float, quality):
    quality = _check_quality(quality)

    def reward(images, prompts, metadata) -> RewardResult:
        kb = jpeg_kb(images, quality)
        return RewardResult(scalar=sign * kb, info={"jpeg_kb": kb})

    return reward


def _map_reward(sign: float, quality):
    quality = _check_quality(quality)

    def reward(images, prompts, metadata) -> RewardResult:
        kb = jpeg_kb(images, quality)
        cost = jpeg_cost_map(images, quality)  # [B, H, W]
        return RewardResult(
            map=sign * cost, scalar=sign * kb, info={"jpeg_kb": kb, "jpeg_kb_estimated": cost.sum(dim=(1, 2))}
        )

    return reward


@register("jpeg-compressibility", "Minus the JPEG (quality 95) file size in kB (DDPO)")
def jpeg_compressibility(quality: int = QUALITY):
    """Scalar ``-kB`` of the image saved as JPEG at ``quality`` (DDPO's compressibility)."""
    return _scalar_reward(-1.0, quality)


@register("jpeg-incompressibility", "The JPEG (quality 95) file size in kB (DDPO)")
def jpeg_incompressibility(quality: int = QUALITY):
    """Scalar ``+kB`` of the image saved as JPEG at ``quality`` (DDPO's incompressibility)."""
    return _scalar_reward(1.0, quality)


@register("jpeg-compressibility-map", "Minus the estimated JPEG coding cost per pixel (kB/pixel)")
def jpeg_compressibility_map(quality: int = QUALITY):
    """Map ``-cost`` (kB per pixel, see module docstring); scalar ``-kB`` of the real file."""
    return _map_reward(-1.0, quality)


@register("jpeg-incompressibility-map", "The estimated JPEG coding cost per pixel (kB/pixel)")
def jpeg_incompressibility_map(quality: int = QUALITY):
    """Map ``+cost`` (kB per pixel, see module docstring); scalar ``+kB`` of the real file."""
    return _map_reward(1.0, quality)
