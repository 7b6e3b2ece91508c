"""Pretraining pieces: partial captions, and continuing the embedded model's training from its weights."""

import json

import numpy as np
import pytest
import torch

from pxpo.testbed import world
from pxpo.testbed.pretrain.denoiser import drop_parts


def test_partial_captions_name_only_the_given_parts_in_the_models_words():
    assert world.partial_caption("circle", "red", "blue") == world.caption("circle", "red", "blue")
    assert world.partial_caption("circle", "red", None) == "a red circle"
    assert world.partial_caption("circle", None, "blue") == "a circle on a blue background"
    assert world.partial_caption(None, "red", "blue") == "a red on a blue background"
    assert world.partial_caption(None, None, "blue") == "a blue background"
    assert world.partial_caption(None, None, None) == ""
    world.check_vocabulary([world.partial_caption("cross", None, "white")])


def test_part_dropout_zero_keeps_whole_captions_and_otherwise_drops_each_part_at_its_rate():
    batch = world.sample(400, seed=3)
    whole = drop_parts(batch, torch.Generator().manual_seed(0), 0.1, 0.0)
    assert all(p in ("", c) for p, c in zip(whole, batch.captions))
    assert 0.05 < np.mean([p == "" for p in whole]) < 0.15
    parts = drop_parts(batch, torch.Generator().manual_seed(0), 0.0, 0.3)
    world.check_vocabulary(parts)
    named_shape = np.mean([s in p.split() for p, s in zip(parts, batch.shapes)])
    named_bg = np.mean([p.endswith(f"{b} background") for p, b in zip(parts, batch.backgrounds)])
    assert 0.6 < named_shape < 0.8 and 0.6 < named_bg < 0.8  # each kept with probability 0.7
    assert any(p == world.caption(s, c, b) for p, s, c, b in zip(parts, batch.shapes, batch.colours, batch.backgrounds))


@pytest.mark.slow
def test_pretrain_continues_from_the_embedded_model_and_writes_a_loadable_pipeline(tmp_path):
    from pxpo.backends.registry import load_pipeline
    from pxpo.testbed.pretrain.run import PretrainConfig, pretrain

    threads = torch.get_num_threads()
    out = pretrain(
        PretrainConfig(
            out=str(tmp_path / "m"),
            init="shapes-tiny",
            part_dropout=0.3,
            unet_steps=2,
            unet_batch=2,
            unet_lr=1e-5,
            sample_every=0,
            threads=1,
        )
    )
    torch.set_num_threads(threads)
    log = json.loads((out / "pretrain_log.json").read_text())
    assert log["config"]["init"] == "shapes-tiny" and log["vae_seconds"] == 0.0
    start, cont = load_pipeline("shapes-tiny"), load_pipeline(str(out))
    # the VAE is the shipped one; the UNet moved a little from the shipped one
    for a, b in zip(start.vae.parameters(), cont.vae.parameters()):
        assert torch.equal(a, b)
    moved = [float((a - b).detach().abs().max()) for a, b in zip(start.unet.parameters(), cont.unet.parameters())]
    assert 0 < max(moved) < 1e-2


@pytest.mark.slow
def test_pretrain_flow_keeps_the_vae_and_writes_an_sd3_pipeline_that_trains_and_samples(tmp_path):
    from diffusers import StableDiffusion3Pipeline

    from pxpo.backends.registry import load_pipeline
    from pxpo.testbed.pretrain.run import PretrainConfig, pretrain

    threads = torch.get_num_threads()
    out = pretrain(
        PretrainConfig(
            out=str(tmp_path / "f"),
            family="flow",
            init="shapes-parts",
            part_dropout=0.3,
            unet_steps=2,
            unet_batch=2,
            sample_every=0,
            threads=1,
        )
    )
    torch.set_num_threads(threads)
    log = json.loads((out / "pretrain_log.json").read_text())
    assert log["config"]["family"] == "flow" and log["denoiser_final_loss"] > 0
    start, flow = load_pipeline("shapes-parts"), load_pipeline(str(out))
    assert isinstance(flow, StableDiffusion3Pipeline) and flow.text_encoder_3 is None
    for a, b in zip(start.vae.parameters(), flow.vae.parameters()):
        assert torch.equal(a, b)
    # both CLIP encoders start from the DDIM model's text encoder, so the words start known
    emb = start.text_encoder.get_input_embeddings().weight
    assert torch.allclose(flow.text_encoder.get_input_embeddings().weight, emb, atol=1e-2)
    images = flow(
        ["a red circle on a blue background"],
        height=64,
        width=64,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    assert images.shape == (1, 3, 64, 64) and torch.isfinite(images).all()


def test_pretrain_flow_needs_a_start_that_knows_the_world(tmp_path):
    import pytest

    from pxpo.errors import ConfigError
    from pxpo.testbed.pretrain.run import PretrainConfig, pretrain

    threads = torch.get_num_threads()
    with pytest.raises(ConfigError, match="needs --init"):
        pretrain(PretrainConfig(out=str(tmp_path / "f"), family="flow", threads=1))
    torch.set_num_threads(threads)
