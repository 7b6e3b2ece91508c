"""What the backends share (:mod:`pxpo.backends.base`): the network, picture sizes and the LoRA targets,
each refused in words where a user's setting cannot work."""

import pytest

from pxpo.backends import backbone_for
from pxpo.backends.base import checked_size
from pxpo.errors import ConfigError
from tiny_sd3 import tiny_flux, tiny_sd3


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    tok = tmp_path_factory.mktemp("tok")
    return {"sd3": tiny_sd3(tok), "flux": tiny_flux(tok)}


def test_checked_size_defaults_and_refuses_sizes_off_the_step():
    assert checked_size(None, None, 64, 8, "the VAE factor 8") == (64, 64)
    assert checked_size(48, None, 64, 8, "the VAE factor 8") == (48, 64)
    with pytest.raises(ConfigError, match=r"multiples of 16 \(the patch\), got 40x64"):
        checked_size(40, 64, 64, 16, "the patch")


def test_each_family_names_its_network_and_refuses_a_size_it_cannot_draw(random_pipe, pipes):
    sd, sd3, flux = backbone_for(random_pipe), backbone_for(pipes["sd3"]), backbone_for(pipes["flux"])
    assert sd.model is random_pipe.unet and sd3.model is pipes["sd3"].transformer
    assert flux.model is pipes["flux"].transformer
    f = random_pipe.vae_scale_factor
    assert sd.picture_size() == (random_pipe.unet.config.sample_size * f,) * 2
    with pytest.raises(ConfigError, match=f"multiples of {f} \\(the VAE factor {f}\\)"):
        sd.picture_size(f + 1, None)
    step = pipes["sd3"].vae_scale_factor * pipes["sd3"].transformer.config.patch_size
    with pytest.raises(ConfigError, match=f"multiples of {step} .*patch size"):
        sd3.picture_size(step + 1, None)
    with pytest.raises(ConfigError, match="for FLUX"):
        flux.picture_size(pipes["flux"].vae_scale_factor * 3, None)


def test_lora_targets_that_match_nothing_are_refused_with_the_option_to_change(pipes):
    with pytest.raises(ConfigError, match=r"model.lora_targets=\['not_a_layer'\] match no module of the transformer"):
        backbone_for(pipes["sd3"]).prepare_training("lora", targets=["not_a_layer"])
