"""``pxpo refine``: a person's brush strokes on one image, refined round after round (PXPO's
human-feedback experiment).

A session refines the picture of one prompt and one noise seed:

1. ``pxpo refine --dir=D --prompt="..." --seed=S`` draws the picture (DDIM, eta > 0) and keeps its
   trajectory: ``D/round_000.png``.
2. The person paints on it and saves the strokes (format below), e.g. ``D/strokes_000.png``.
3. ``pxpo refine --dir=D --strokes=D/strokes_000.png`` turns the strokes s (liked +, disliked -)
   into a per-pixel reward and runs a few PXPO epochs on *variations* of the picture: the same x_T
   (so the same layout) with fresh step noise. A variation x is scored against the round's picture
   I by

       r_ij = s_ij * (1 - dE(x_ij, I_ij) / dE_max)                                    (CIELAB)

   liked pixels earn for staying as they are, disliked ones for becoming different, unmarked
   pixels are neutral. Variations share x_T, so pixel (i, j) means the same place in all of them
   and PXPO's per-pixel baseline compares like with like. Then the *same seed* is redrawn with the
   updated model: ``round_001.png``, and ``compare_001.png`` shows previous | strokes | new.
   Repeat from 2.

With ``replay=true`` (default) every round also scores against the earlier rounds' pictures and
strokes (the mean of the rounds' maps), so a later round does not undo what an earlier one asked.

Strokes files (the image's height and width):
- PNG with alpha, painted on a transparent layer: green-ish paint (G > R) = liked (+), red-ish
  paint (R > G) = disliked (-), strength = alpha / 255; transparent = no opinion;
- PNG without alpha (greyscale or RGB, read as grey): 128 = no opinion, 255 = +1, 0 = -1;
- ``.npy``: a float array [H, W] in [-1, 1].
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pxpo.config import opt

STATE = "session.json"


@dataclass
class RefineConfig:
    dir: str = opt("runs/refine", "the session directory (round pictures, trajectories, weights, session.json)")
    strokes: str = opt("", "strokes on the latest round (PNG or .npy, see `pxpo refine --help`); "
                       "empty = start a session")
    prompt: str = opt("a red square on a blue background", "the prompt (fixed when the session starts)")
    model: str = opt("shapes-tiny", "the model (fixed when the session starts)")
    seed: int = opt(0, "the noise seed of the refined picture (fixed when the session starts)")
    num_steps: int = opt(20, "DDIM steps (fixed when the session starts)")
    guidance: float = opt(5.0, "classifier-free guidance (fixed when the session starts)")
    eta: float = opt(1.0, "DDIM eta > 0 (fixed when the session starts)")
    finetune: str = opt("auto", "'full', 'lora' or 'auto' (full for shapes-tiny)")
    epochs: int = opt(4, "PXPO epochs per round (sample variations -> reward -> one update)")
    variations: int = opt(8, "variations of the picture per epoch (same x_T, fresh step noise)")
    lr: float = opt(1e-4, "AdamW learning rate")
    replay: bool = opt(True, "also train on the earlier rounds' strokes")
    threads: int = opt(2, "torch CPU threads")


def read_strokes(path: str | Path, height: int, width: int) -> torch.Tensor:
    """A strokes file -> signed map [H, W] in [-1, 1] (formats in the module docstring)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"strokes file {str(path)!r} does not exist")
    if path.suffix.lower() == ".npy":
        arr = np.load(path).astype(np.float32)
    else:
        img = Image.open(path)
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
            sign = np.sign(rgba[..., 1] - rgba[..., 0])
            arr = sign * rgba[..., 3]
        else:
            arr = (np.asarray(img.convert("L"), dtype=np.float32) - 128.0) / 127.0
    if arr.shape != (height, width):
        raise ValueError(f"strokes {str(path)!r} are {'x'.join(map(str, arr.shape))}; paint them on the "
                         f"{height}x{width} picture of the latest round (height x width)")
    if not np.isfinite(arr).all():
        raise ValueError(f"strokes {str(path)!r} hold NaN or inf values")
    return torch.from_numpy(np.clip(arr, -1.0, 1.0))


def strokes_overlay(image: torch.Tensor, strokes: torch.Tensor) -> torch.Tensor:
    """The picture [3, H, W] with liked pixels tinted green and disliked ones red (for compare_*.png)."""
    pos, neg = strokes.clamp(min=0), (-strokes).clamp(min=0)
    green = torch.tensor([0.1, 0.9, 0.1]).view(3, 1, 1)
    red = torch.tensor([0.95, 0.1, 0.1]).view(3, 1, 1)
    out = image * (1 - 0.7 * pos) + 0.7 * pos * green
    return out * (1 - 0.7 * neg) + 0.7 * neg * red


def strokes_reward(images: torch.Tensor, history: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """[V, 3, H, W] variations -> reward maps [V, H, W]: mean over (picture, strokes) pairs of
    strokes * CIELAB closeness to the picture."""
    from pxpo.rewards.colour import closeness_to

    maps = [strokes * closeness_to(images, picture.expand_as(images)) for picture, strokes in history]
    return torch.stack(maps).mean(dim=0)


def change_by_mark(before: torch.Tensor, after: torch.Tensor, strokes: torch.Tensor) -> dict:
    """Mean |change| per pixel (RGB in [0, 1]) between two pictures [3, H, W] on the liked, disliked
    and unmarked pixels of ``strokes`` [H, W] (None where there are none)."""
    change = (after - before).abs().mean(dim=0)  # [H, W]
    part = {"liked": strokes > 0, "disliked": strokes < 0, "unmarked": strokes == 0}
    return {f"change_{n}": float(change[m].mean()) if m.any() else None for n, m in part.items()}


@dataclass
class Target:
    """One picture a round refines: its prompt, its x_T [1, C, h, w] (the variations share it, so
    they share its layout) and the (picture [3, H, W], strokes [H, W]) pairs that score them: this
    round's marks, plus earlier rounds' when they are replayed."""
    prompt: str
    x_T: torch.Tensor
    history: list[tuple[torch.Tensor, torch.Tensor]]


def seed_latents(pipe, seed: int) -> torch.Tensor:
    """The x_T [1, C, h, w] of a seed, exactly as ``sample_trajectories`` draws it from a fresh
    ``torch.Generator().manual_seed(seed)``."""
    size = pipe.unet.config.sample_size
    return torch.randn((1, pipe.unet.config.in_channels, size, size), generator=torch.Generator().manual_seed(seed))


def round_policy(pipe, mode: str, *, lr: float, variations: int, num_steps: int, guidance: float, eta: float):
    """The :class:`~pxpo.training.policy.Policy` a round updates: PXPO, score function, one
    minibatch of all variations of a picture, every timestep, no KL (the liked pixels hold the
    picture), AdamW without weight decay."""
    from accelerate import Accelerator

    from pxpo.training.config import ModelConfig, SampleConfig, TrainConfig
    from pxpo.training.policy import Policy

    train = TrainConfig(algorithm="pxpo", objective="sf", lr=lr, weight_decay=0.0, batch_size=variations, kl_coef=0.0)
    sample = SampleConfig(num_steps=num_steps, guidance=guidance, eta=eta, batch_size=variations, group_size=variations)
    return Policy(Accelerator(gradient_accumulation_steps=num_steps), pipe, mode, train, sample, ModelConfig(),
                  (pipe.unet.config.sample_size,) * 2)


def train_round(pipe, policy, targets: list[Target], *, epochs: int, variations: int, num_steps: int,
                guidance: float, eta: float, gen: torch.Generator, on_epoch=None) -> list[float]:
    """One round of refinement, shared by ``pxpo refine`` and ``pxpo studio``: per epoch and per
    target, ``variations`` trajectories from the target's x_T with fresh step noise, scored by
    :func:`strokes_reward`, group advantages weighted by where the marks have an opinion (each
    pixel against the same pixel of the other variations), and one :meth:`pxpo.training.policy.Policy.update` (the update ``pxpo train``
    uses). ``on_epoch(epoch, reward)`` is called after each epoch (progress). Returns the mean
    strokes reward per epoch."""
    from pxpo.advantages import compute_advantages
    from pxpo.latent_map import results_to_latent_grid
    from pxpo.trajectory import sample_trajectories

    rewards = []
    for epoch in range(epochs):
        per_target = []
        for t in targets:
            x_T = t.x_T.expand(variations, -1, -1, -1)
            hw = tuple(x_T.shape[-2:])
            traj = sample_trajectories(pipe, [t.prompt] * variations, None, num_steps, guidance, eta,
                                       generator=gen, init_latents=x_T)
            rmap = strokes_reward(traj.images, t.history)  # [V, H, W]
            per_target.append(float(rmap.mean()))
            # opinion weights, as pxpo train's recipe uses them: a pixel nobody marked gets no credit and
            # does not shrink the advantages' pooled scale (identical when every pixel is marked)
            opinion = (torch.stack([s.abs() for _, s in t.history]).amax(dim=0) > 0).float().expand_as(rmap)
            maps, weights, _ = results_to_latent_grid([rmap], [opinion], [None], hw)
            adv = compute_advantages(maps, traj.prompts, "group", weights=weights)
            policy.update(traj, adv, gen)
        rewards.append(float(np.mean(per_target)))
        if on_epoch is not None:
            on_epoch(epoch + 1, rewards[-1])
    return rewards


class Session:
    """A refinement session in a directory; see the module docstring."""

    def __init__(self, cfg: RefineConfig):
        from pxpo.models.finetune import resolve_mode
        from pxpo.models.registry import is_embedded, load_pipeline

        torch.set_num_threads(cfg.threads)
        self.dir = Path(cfg.dir)
        state_file = self.dir / STATE
        if state_file.is_file():
            self.state = json.loads(state_file.read_text())
        elif cfg.strokes:
            raise FileNotFoundError(f"{self.dir} holds no refinement session ({STATE}); start one first: "
                                    f"pxpo refine --dir={self.dir} --prompt=\"...\" --seed=N")
        else:
            if cfg.eta <= 0:
                raise ValueError(f"eta={cfg.eta}: the policy needs eta > 0 for a density (use 1.0)")
            self.state = {"prompt": cfg.prompt, "model": cfg.model, "seed": cfg.seed, "num_steps": cfg.num_steps,
                          "guidance": cfg.guidance, "eta": cfg.eta, "rounds": []}
        self.cfg = cfg
        self.pipe = load_pipeline(self.state["model"])
        self.embedded = is_embedded(self.state["model"])
        if self.embedded:
            from pxpo import world

            world.check_vocabulary([self.state["prompt"]])
        self.mode = resolve_mode(cfg.finetune, self.embedded)
        s = self.state
        self.policy = round_policy(self.pipe, self.mode, lr=cfg.lr, variations=cfg.variations,
                                   num_steps=s["num_steps"], guidance=s["guidance"], eta=s["eta"])
        weights = self.dir / "params.pt"
        if weights.is_file():
            saved = torch.load(weights, weights_only=True)
            named = dict(self.pipe.unet.named_parameters())
            with torch.no_grad():
                for k, v in saved.items():
                    named[k].copy_(v)

    @property
    def round(self) -> int:
        return len(self.state["rounds"])

    def draw(self):
        """The session's picture under the current weights: the same prompt and seed every round."""
        from pxpo.trajectory import sample_trajectories

        s = self.state
        gen = torch.Generator().manual_seed(s["seed"])
        return sample_trajectories(self.pipe, [s["prompt"]], None, s["num_steps"], s["guidance"], s["eta"],
                                   generator=gen)

    def start(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        traj = self.draw()
        self._save_round(0, traj)
        self._save_state()
        return self.dir / "round_000.png"

    def refine(self, strokes: torch.Tensor, strokes_file: str = "") -> Path:
        """One round: PXPO on variations scored by the strokes [H, W] (module docstring), redraw, save."""
        from pxpo.images import labelled_rows, make_grid, save

        k, s, cfg = self.round, self.state, self.cfg
        torch.save(strokes, self.dir / f"strokes_{k:03d}.pt")
        picture = torch.load(self.dir / f"traj_{k:03d}.pt", weights_only=False)
        earlier = range(k) if cfg.replay else []
        history = [(torch.load(self.dir / f"traj_{i:03d}.pt", weights_only=False).images[0],
                    torch.load(self.dir / f"strokes_{i:03d}.pt", weights_only=True)) for i in earlier]
        history.append((picture.images[0], strokes))
        gen = torch.Generator().manual_seed(s["seed"] * 1000 + k + 1)
        target = Target(s["prompt"], picture.latents[:1, 0], history)  # the picture's x_T: same layout
        rewards = train_round(self.pipe, self.policy, [target], epochs=cfg.epochs, variations=cfg.variations,
                              num_steps=s["num_steps"], guidance=s["guidance"], eta=s["eta"], gen=gen)
        new = self.draw()
        self._save_round(k + 1, new)
        before = picture.images[0]
        grid = make_grid(torch.stack([before, strokes_overlay(before, strokes), new.images[0]]), scale=4)
        save(labelled_rows([grid], [f"round {k} | strokes | round {k + 1}"]), self.dir / f"compare_{k + 1:03d}.png")
        s["rounds"].append({"strokes": strokes_file, "epochs": cfg.epochs, "variations": cfg.variations,
                            "lr": cfg.lr, "replay": cfg.replay, "reward_per_epoch": rewards,
                            **change_by_mark(before, new.images[0], strokes)})
        torch.save({n: p.detach().clone() for n, p in self.pipe.unet.named_parameters() if p.requires_grad},
                   self.dir / "params.pt")
        self._save_state()
        return self.dir / f"round_{k + 1:03d}.png"

    def _save_round(self, k: int, traj) -> None:
        from pxpo.images import make_grid, save

        torch.save(traj, self.dir / f"traj_{k:03d}.pt")
        save(make_grid(traj.images, scale=1), self.dir / f"round_{k:03d}.png")

    def _save_state(self) -> None:
        (self.dir / STATE).write_text(json.dumps({**self.state, "last_config": asdict(self.cfg)}, indent=2))


def main(argv: list[str]) -> int:
    from pxpo.config import parse_overrides

    cfg = parse_overrides(RefineConfig(), argv, prog="pxpo refine", description=__doc__)
    session = Session(cfg)
    if not cfg.strokes:
        if session.round or (session.dir / "round_000.png").is_file():
            raise ValueError(f"{session.dir} already holds a session at round {session.round}; give "
                             f"--strokes=FILE for its latest picture, or choose another --dir")
        print(f"round 0: {session.start()}  (paint strokes on it, then: pxpo refine --dir={cfg.dir} "
              "--strokes=FILE)")
        return 0
    h = w = session.pipe.unet.config.sample_size * session.pipe.vae_scale_factor  # draw()'s picture size
    path = session.refine(read_strokes(cfg.strokes, h, w), cfg.strokes)
    r = session.state["rounds"][-1]
    changes = ", ".join(f"{n} {r['change_' + n]:.3f}" for n in ("liked", "disliked", "unmarked")
                        if r["change_" + n] is not None)
    print(f"round {session.round}: {path}  (mean |change| per pixel: {changes})")
    return 0
