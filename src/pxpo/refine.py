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


class Session:
    """A refinement session in a directory; see the module docstring."""

    def __init__(self, cfg: RefineConfig):
        from accelerate import Accelerator

        from pxpo.models.finetune import resolve_mode
        from pxpo.models.registry import is_embedded, load_pipeline
        from pxpo.training.config import ModelConfig
        from pxpo.training.policy import Policy

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
        self.policy = Policy(Accelerator(gradient_accumulation_steps=self.state["num_steps"]), self.pipe,
                             self.mode, self.train_config(), self.sample_config(), ModelConfig(),
                             (self.pipe.unet.config.sample_size,) * 2)
        weights = self.dir / "params.pt"
        if weights.is_file():
            saved = torch.load(weights, weights_only=True)
            named = dict(self.pipe.unet.named_parameters())
            with torch.no_grad():
                for k, v in saved.items():
                    named[k].copy_(v)

    def train_config(self):
        """The policy update of a round: PXPO on one minibatch of all variations, every timestep."""
        from pxpo.training.config import TrainConfig

        return TrainConfig(algorithm="pxpo", objective="sf", lr=self.cfg.lr, weight_decay=0.0,
                           batch_size=self.cfg.variations, kl_coef=0.0)

    def sample_config(self):
        from pxpo.training.config import SampleConfig

        s = self.state
        return SampleConfig(num_steps=s["num_steps"], guidance=s["guidance"], eta=s["eta"],
                            batch_size=self.cfg.variations, group_size=self.cfg.variations)

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

    def strokes_reward(self, images: torch.Tensor, history: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """[V, 3, H, W] variations -> reward maps [V, H, W]: mean over rounds of s * closeness to I."""
        from pxpo.rewards.colour import closeness_to

        maps = [strokes * closeness_to(images, picture.expand_as(images)) for picture, strokes in history]
        return torch.stack(maps).mean(dim=0)

    def refine(self, strokes: torch.Tensor, strokes_file: str = "") -> Path:
        """One round: PXPO on variations scored by the strokes [H, W] (module docstring), redraw, save."""
        from pxpo.advantages import compute_advantages
        from pxpo.images import labelled_rows, make_grid, save
        from pxpo.latent_map import to_latent_grid
        from pxpo.trajectory import sample_trajectories

        k, s, cfg = self.round, self.state, self.cfg
        torch.save(strokes, self.dir / f"strokes_{k:03d}.pt")
        picture = torch.load(self.dir / f"traj_{k:03d}.pt", weights_only=False)
        earlier = range(k) if cfg.replay else []
        history = [(torch.load(self.dir / f"traj_{i:03d}.pt", weights_only=False).images[0],
                    torch.load(self.dir / f"strokes_{i:03d}.pt", weights_only=True)) for i in earlier]
        history.append((picture.images[0], strokes))
        x_T = picture.latents[:1, 0].expand(cfg.variations, -1, -1, -1)  # the picture's x_T: same layout
        gen = torch.Generator().manual_seed(s["seed"] * 1000 + k + 1)
        rewards = []
        for _ in range(cfg.epochs):  # one shared-noise group: the variations of the picture
            traj = sample_trajectories(self.pipe, [s["prompt"]] * cfg.variations, None, s["num_steps"],
                                       s["guidance"], s["eta"], generator=gen, init_latents=x_T)
            rmap = self.strokes_reward(traj.images, history)  # [V, H, W]
            rewards.append(float(rmap.mean()))
            adv = compute_advantages(to_latent_grid(rmap, tuple(x_T.shape[-2:])), traj.prompts, "group")
            self.policy.update(traj, adv, gen)
        new = self.draw()
        self._save_round(k + 1, new)
        before = picture.images[0]
        grid = make_grid(torch.stack([before, strokes_overlay(before, strokes), new.images[0]]), scale=4)
        save(labelled_rows([grid], [f"round {k} | strokes | round {k + 1}"]), self.dir / f"compare_{k + 1:03d}.png")
        change = (new.images[0] - before).abs().mean(dim=0)  # [H, W]
        part = {"liked": strokes > 0, "disliked": strokes < 0, "unmarked": strokes == 0}
        s["rounds"].append({"strokes": strokes_file, "epochs": cfg.epochs, "variations": cfg.variations,
                            "lr": cfg.lr, "replay": cfg.replay, "reward_per_epoch": rewards,
                            **{f"change_{n}": float(change[m].mean()) if m.any() else None for n, m in part.items()}})
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
