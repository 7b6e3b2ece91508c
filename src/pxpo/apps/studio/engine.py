"""The model of one studio session in memory: its pipeline, the policy a round updates, and which
round's weights the network holds. A round is :func:`pxpo.apps.rounds.train_round`, the same function
``pxpo refine`` runs, around :func:`pxpo.core.epoch.run_epoch`, the epoch ``pxpo train`` runs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pxpo.apps.studio.store import Store
from pxpo.errors import UserError


def picture_size(model: str) -> tuple[int, int]:
    """(height, width) of a model's pictures, read from its config files (no weights loaded)."""
    from pxpo.backends.registry import check_model_source

    source = Path(check_model_source(model))
    unet = json.loads((source / "unet" / "config.json").read_text())
    vae = json.loads((source / "vae" / "config.json").read_text())
    side = unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)
    return side, side


class Engine:
    def __init__(self, store: Store):
        from pxpo.apps.rounds import round_policy
        from pxpo.backends import backbone_for
        from pxpo.backends.finetune import resolve_mode
        from pxpo.backends.registry import is_embedded, load_pipeline

        self.store, self.meta = store, store.meta()
        m, s = self.meta, self.meta["settings"]
        self.pipe = load_pipeline(m["model"])
        self.backbone = backbone_for(self.pipe)
        self.mode = resolve_mode(m["finetune"], is_embedded(m["model"]))
        self.policy = round_policy(
            self.backbone,
            self.mode,
            lr=s["lr"],
            variations=s["variations"],
            num_steps=m["num_steps"],
            guidance=m["guidance"],
            eta=m["eta"],
            kl_coef=s.get("kl_coef", 0.0),
            timestep_fraction=s.get("timestep_fraction", 1.0),
        )
        self.net = self.policy.accel.unwrap_model(self.policy.model)
        self.start = {n: p.detach().clone() for n, p in self.net.named_parameters() if p.requires_grad}
        self.loaded: int | None = 0

    def trainable(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.net.named_parameters() if p.requires_grad}

    def load(self, rid: int) -> None:
        """Put round ``rid``'s weights into the network and start a fresh optimizer (as pxpo refine does
        every round), so a branch does not inherit another branch's optimizer state."""
        from safetensors.torch import load_file

        wf = self.store.weights_file(rid)
        if self.loaded != rid:
            saved = self.start if wf is None else load_file(str(wf))
            named = dict(self.net.named_parameters())
            if set(saved) != set(self.start):
                raise UserError(
                    f"round {rid}'s weights do not fit this model ({len(saved)} tensors, expected {len(self.start)})"
                )
            with torch.no_grad():
                for k, v in saved.items():
                    named[k].copy_(v)
            self.loaded = rid
        opt = getattr(self.policy.opt, "optimizer", self.policy.opt)
        opt.state.clear()

    def draw(self, rid: int, seed: int) -> torch.Tensor:
        """The picture [3, H, W] of ``seed`` under round ``rid``'s weights (pxpo refine's draw)."""
        self.load(rid)
        return self.draw_current(seed)

    def picture(self, rid: int, seed: int) -> Path:
        """The picture file of (round, seed), drawn and stored the first time it is asked for."""
        path = self.store.picture_file(rid, seed)
        return path if path is not None else self.store.save_picture(rid, seed, self.draw(rid, seed))

    def train(self, rid: int, on_epoch=None) -> list[float]:
        """Train a committed (pending) round, store its new pictures and weights."""
        from pxpo.apps.rounds import Target, change_by_mark, seed_latents, set_round_settings, train_round

        store, m = self.store, self.meta
        r = store.round(rid)
        s = r["settings"]
        marks = store.marks(rid)
        lineage = store.lineage(rid) if s["replay"] else [rid]
        earlier = {k: store.marks(k) for k in lineage[:-1]}
        targets = []
        for seed, pair in marks.items():
            history = [e[seed] for e in earlier.values() if seed in e] + [pair]
            targets.append(Target(m["prompt"], seed_latents(self.backbone, seed), history))
        self.load(r["parent"])
        set_round_settings(self.policy, s)  # each round trains with the settings it recorded
        if s.get("kl_coef", 0.0) > 0:
            self.policy.anchor_here()  # liked pixels are held as the parent round drew them
        self.loaded = None  # the network now moves away from the parent's weights
        gen = torch.Generator().manual_seed(rid * 7919 + 1)
        rewards = train_round(
            self.policy,
            targets,
            epochs=s["epochs"],
            variations=s["variations"],
            num_steps=m["num_steps"],
            guidance=m["guidance"],
            eta=m["eta"],
            gen=gen,
            on_epoch=on_epoch,
        )
        weights = self.trainable()
        for seed, (before, strokes) in marks.items():
            after = self.draw_current(seed)
            store.save_picture(rid, seed, after)
            store.set_changes(rid, seed, change_by_mark(before, after, strokes))
        store.finish(rid, weights, rewards)
        self.loaded = rid
        return rewards

    def draw_current(self, seed: int) -> torch.Tensor:
        """The picture of ``seed`` under the weights the network holds now."""
        from pxpo.core.trajectory import sample_trajectories

        m = self.meta
        return sample_trajectories(
            self.backbone,
            [m["prompt"]],
            None,
            m["num_steps"],
            m["guidance"],
            m["eta"],
            generator=torch.Generator().manual_seed(seed),
        ).images[0]

    def save_weights(self, rid: int, directory: Path) -> Path:
        """Round ``rid``'s weights as diffusers loads them: the whole pipeline (full fine-tuning,
        ``StableDiffusionPipeline.from_pretrained``) or LoRA weights (``pipe.load_lora_weights``)."""
        self.load(rid)
        return self.backbone.save_weights(self.net, self.mode, directory)
