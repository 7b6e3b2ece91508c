"""Pretraining of the embedded model ``shapes-tiny`` from scratch on the shapes world.

``pxpo pretrain`` runs :func:`pxpo.testbed.pretrain.run.pretrain`: the VAE first (:mod:`.vae`), then the
denoiser and the text encoder together (:mod:`.denoiser`), saving a diffusers pipeline directory.
"""
