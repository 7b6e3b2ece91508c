"""JPEG (in)compressibility: DDPO's scalar and the per-block coding-cost map."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pxpo.testbed import world
from pxpo.images import to_uint8
from pxpo.rewards import RewardError, get_reward, validate
from pxpo.rewards.compress import (
    CHROMA_BASE,
    LUMA_BASE,
    ac_bits,
    huffman_lengths,
    jpeg_cost_map,
    jpeg_kb,
    quant_table,
    zigzag,
)

torch.set_num_threads(1)


def varied_images() -> torch.Tensor:
    """[14, 3, 64, 64]: flat shapes, noise at several scales, grey noise, a gradient."""
    g = torch.Generator().manual_seed(0)
    parts = [world.sample(4, seed=1).tensors()[0], torch.rand(2, 3, 64, 64, generator=g)]
    for cells in (8, 16):
        parts.append(F.interpolate(torch.rand(2, 3, cells, cells, generator=g), size=64, mode="bilinear"))
    parts.append(torch.rand(2, 1, 64, 64, generator=g).expand(2, 3, 64, 64) * 0.3 + 0.3)
    lin = torch.linspace(0, 1, 64)
    parts.append(torch.stack([lin[None].expand(64, 64), lin[:, None].expand(64, 64), torch.full((64, 64), 0.5)])[None])
    parts.append(torch.full((1, 3, 64, 64), 0.4))
    return torch.cat(parts)


def pil_kb(images):
    out = []
    for a in to_uint8(images):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=95)
        out.append(len(buf.getvalue()) / 1000)
    return torch.tensor(out)


def test_scalar_is_ddpo_file_size():
    x = varied_images()
    kb = pil_kb(x)
    comp = validate(get_reward("jpeg-compressibility")(x, [""] * len(x), [{}] * len(x)), "c", x)
    inc = validate(get_reward("jpeg-incompressibility")(x, [""] * len(x), [{}] * len(x)), "i", x)
    assert torch.allclose(jpeg_kb(x), kb)
    assert torch.allclose(inc.scalar, kb) and torch.allclose(comp.scalar, -kb)
    assert comp.map is None


def test_tables_match_what_pillow_writes():
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="JPEG", quality=95)
    q = Image.open(buf).quantization
    assert quant_table(LUMA_BASE).flatten().int().tolist() == list(q[0])
    assert quant_table(CHROMA_BASE).flatten().int().tolist() == list(q[1])
    assert sorted(zigzag().tolist()) == list(range(64)) and zigzag()[:6].tolist() == [0, 1, 8, 16, 9, 2]
    lens = huffman_lengths()
    assert lens[(1, 0)][0x00] == 4 and lens[(1, 0)][0x01] == 2  # Annex K luma AC: EOB 1010, 0/1 00


def test_ac_bits_counts_runs_and_eob():
    ac_len = huffman_lengths()[(1, 0)]
    zz = torch.zeros(2, 64)
    zz[1, 1], zz[1, 20] = 1, -3  # run 0 size 1; run 18 (one ZRL + run 2) size 2; then EOB
    bits = ac_bits(zz, ac_len)
    assert bits[0] == ac_len[0x00]  # just EOB
    assert bits[1] == ac_len[0x01] + 1 + ac_len[0xF0] + ac_len[0x22] + 2 + ac_len[0x00]


def test_block_costs_track_the_real_file_size():
    x = varied_images()
    est = jpeg_cost_map(x).sum(dim=(1, 2))
    kb = pil_kb(x)
    pearson = np.corrcoef(est.numpy(), kb.numpy())[0, 1]
    assert pearson > 0.99
    headers = kb - est  # Pillow's headers (~0.63 kB): a constant offset
    assert headers.min() > 0.55 and headers.max() < 0.75


def test_flat_is_cheap_and_noise_is_expensive():
    x = torch.full((1, 3, 64, 64), 0.5)
    x[0, :, 16:24, 32:40] = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    cost = jpeg_cost_map(x)[0]
    noise = cost[16:24, 32:40].mean()
    far = cost[48:, :16].mean()  # flat luma and chroma blocks far from the noise
    assert noise > 50 * far
    # A flat luma block: DC diff 0 (2 bits) + EOB (4); a flat Cb + Cr pair: 2 x (2 + 2) over 4 blocks.
    assert float(far * 64 * 8000) == pytest.approx(8.0)


def test_map_rewards_sign_and_scale():
    images = world.sample(2, seed=3).tensors()[0]
    r = validate(get_reward("jpeg-incompressibility-map")(images, ["", ""], [{}, {}]), "m", images)
    c = validate(get_reward("jpeg-compressibility-map")(images, ["", ""], [{}, {}]), "m", images)
    assert torch.equal(c.map, -r.map) and (r.map >= 0).all()
    assert torch.allclose(r.scalar, pil_kb(images))  # the scalar stays DDPO's exact size
    assert torch.allclose(r.map.mean(dim=(1, 2)) * 64 * 64, r.info["jpeg_kb_estimated"])


def test_odd_sizes_keep_the_total():
    x = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(2))
    cost = jpeg_cost_map(x)
    assert cost.shape == (1, 20, 28)
    assert 0.3 < float(pil_kb(x) - cost.sum()) < 0.9


def test_bad_quality():
    with pytest.raises(RewardError, match="1..100"):
        get_reward("jpeg-compressibility", quality=0)
