"""``pxpo refine``: a person's brush strokes on one picture, refined round after round (PXPO's
human-feedback experiment), from the command line. Its sessions are ``pxpo studio``'s: one folder
with ``studio.sqlite`` (``pxpo.studio.store``), so a session started in either continues in the other,
with its history.

1. ``pxpo refine --dir=D --prompt="..." --seed=S`` starts a session and draws the picture of the
   seed (DDIM, eta > 0): ``D/pictures/r000_sS.png``.
2. The person paints on it and saves the strokes (format below).
3. ``pxpo refine --dir=D --strokes=FILE`` commits the strokes as a round of the session (before
   training, as the studio does), turns them (liked +, disliked -) into a per-pixel reward and runs
   a few PXPO epochs on *variations* of the picture: the same x_T (so the same layout) with fresh
   step noise. A variation x is scored against the marked picture I by

       r_ij = s_ij * (1 - dE(x_ij, I_ij) / dE_max)                                    (CIELAB)

   liked pixels earn for staying as they are, disliked ones for becoming different, unmarked
   pixels are neutral. Variations share x_T, so pixel (i, j) means the same place in all of them
   and PXPO's per-pixel baseline compares like with like. Then the *same seed* is redrawn with the
   updated model: ``D/pictures/r001_sS.png``, and ``D/compare/r001_sS.png`` shows
   previous | strokes | new. Repeat from 2.

``--round=N`` paints on round N's picture instead of the newest round's (a branch, as reopening a
round in the studio); ``--seed`` chooses the picture when the round has several (studio rounds can).
``pxpo refine --dir=D`` without strokes prints (and draws, if needed) that picture. A ``pxpo studio``
session folder (``runs/studio/ID``) works as ``--dir``; folders of the earlier ``session.json``
format are converted in place.

With ``replay=true`` (default) every round also scores against its earlier rounds' pictures and
strokes (the mean of the rounds' maps), so a later round does not undo what an earlier one asked.

Strokes files (the image's height and width):
- PNG with alpha, painted on a transparent layer: green-ish paint (G > R) = liked (+), red-ish
  paint (R > G) = disliked (-), strength = alpha / 255; transparent = no opinion;
- PNG without alpha (greyscale or RGB, read as grey): 128 = no opinion, 255 = +1, 0 = -1;
- ``.npy``: a float array [H, W] in [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pxpo.config import opt

AT_START = ("prompt", "model", "num_steps", "guidance", "eta", "finetune")  # fixed when a session starts


@dataclass
class RefineConfig:
    dir: str = opt("runs/refine", "the session folder (studio.sqlite, pictures/, marks/, weights/, compare/); a "
                   "`pxpo studio` session folder works too")
    strokes: str = opt("", "strokes painted on the picture of --round and --seed (PNG or .npy, see `pxpo refine "
                       "--help`); empty: start the session, or show the picture to paint on")
    round: int = opt(-1, "the round whose picture the strokes were painted on; the new round starts from its "
                     "weights (-1: the newest finished round)")
    seed: int = opt(-1, "the noise seed of the picture (-1: 0 for a new session, else the round's only seed)")
    prompt: str = opt("a red square on a blue background", "the prompt (fixed when the session starts)")
    model: str = opt("shapes-tiny", "the model (fixed when the session starts)")
    num_steps: int = opt(20, "DDIM steps (fixed when the session starts)")
    guidance: float = opt(5.0, "classifier-free guidance (fixed when the session starts)")
    eta: float = opt(1.0, "DDIM eta > 0 (fixed when the session starts)")
    finetune: str = opt("auto", "'full', 'lora' or 'auto': full for shapes-tiny, LoRA for SD directories "
                        "(fixed when the session starts)")
    epochs: int = opt(4, "PXPO epochs per round (sample variations -> reward -> one update)")
    variations: int = opt(8, "variations of the picture per epoch (same x_T, fresh step noise)")
    lr: float = opt(1e-4, "AdamW learning rate")
    kl_coef: float = opt(1.0, "weight of the per-pixel KL to the previous round's model on the liked pixels "
                         "(pxpo train's kl_region=hold anchor; 0 = off)")
    timestep_fraction: float = opt(1.0, "share of each variation's DDIM steps a round trains on, the noisiest "
                                   "first (pxpo train's timestep_order=first); 1 = every step")
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


def round_timesteps(fraction: float) -> dict:
    """The TrainConfig fields for a round's ``timestep_fraction``: below 1 the noisiest steps
    (``timestep_order=first``, pxpo train's recipe); 1 keeps the shuffled order refine was first
    measured with."""
    return {"timestep_fraction": fraction, "timestep_order": "first" if fraction < 1 else "random"}


def round_policy(pipe, mode: str, *, lr: float, variations: int, num_steps: int, guidance: float, eta: float,
                 kl_coef: float = 0.0, timestep_fraction: float = 1.0):
    """The :class:`~pxpo.training.policy.Policy` a round updates: PXPO, score function, one
    minibatch of all variations of a picture, ``timestep_fraction`` of the timesteps (the noisiest
    first; 1 = every one), AdamW without weight decay. With
    ``kl_coef > 0`` the liked pixels are held by ``pxpo train``'s per-pixel KL anchor
    (``kl_region=hold``, the hold maps :func:`train_round` passes), anchored to the round's parent
    (``Policy.anchor_here``, called by the studio's engine when a round starts). A reference copy
    is kept either way, so a later round may switch the anchor on (:func:`set_round_settings`)."""
    from accelerate import Accelerator

    from pxpo.training.config import ModelConfig, SampleConfig, TrainConfig
    from pxpo.training.policy import Policy

    train = TrainConfig(algorithm="pxpo", objective="sf", lr=lr, weight_decay=0.0, batch_size=variations,
                        kl_coef=kl_coef, kl_region="hold", **round_timesteps(timestep_fraction))
    sample = SampleConfig(num_steps=num_steps, guidance=guidance, eta=eta, batch_size=variations, group_size=variations)
    return Policy(Accelerator(gradient_accumulation_steps=num_steps), pipe, mode, train, sample, ModelConfig(),
                  (pipe.unet.config.sample_size,) * 2, keep_start=True)


def set_round_settings(policy, settings: dict) -> None:
    """A round's own settings (lr, variations, kl_coef, timestep_fraction: each round records them) on
    the policy."""
    from dataclasses import replace

    policy.retrain(replace(policy.t, lr=settings["lr"], batch_size=settings["variations"],
                           kl_coef=settings.get("kl_coef", 0.0),  # rounds saved before the anchor: none
                           **round_timesteps(settings.get("timestep_fraction", 1.0))))  # before it: every step
    for g in policy.opt.param_groups:
        g["lr"] = settings["lr"]


def liked_hold(history: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The pixels to hold [H, W] in [0, 1]: the liked strength, averaged over the marks a round
    trains on, as :func:`strokes_reward` averages their maps."""
    return torch.stack([s.clamp(min=0) for _, s in history]).mean(dim=0)


def train_round(pipe, policy, targets: list[Target], *, epochs: int, variations: int, num_steps: int,
                guidance: float, eta: float, gen: torch.Generator, on_epoch=None) -> list[float]:
    """One round of refinement, shared by ``pxpo refine`` and ``pxpo studio``: per epoch and per
    target, ``variations`` trajectories from the target's x_T with fresh step noise, scored by
    :func:`strokes_reward`, group advantages weighted by where the marks have an opinion (each
    pixel against the same pixel of the other variations), the liked pixels as the KL anchor's hold
    map (when ``policy.t.kl_coef > 0``), and one :meth:`pxpo.training.policy.Policy.update` (the
    update ``pxpo train`` uses). ``on_epoch(epoch, reward)`` is called after each epoch (progress). Returns the mean
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
            # train.reuse_sampling: the update reuses the sampler's UNet calls (sampled as the policy trains)
            same = (num_steps, guidance, eta) == (policy.s.num_steps, policy.s.guidance, policy.s.eta)
            keep = policy.keep_graph() if same else 0
            traj = sample_trajectories(pipe, [t.prompt] * variations, None, num_steps, guidance, eta,
                                       generator=gen, init_latents=x_T, unet=policy.unet if keep else None,
                                       keep_graph=keep)
            rmap = strokes_reward(traj.images, t.history)  # [V, H, W]
            per_target.append(float(rmap.mean()))
            # opinion weights, as pxpo train's recipe uses them: a pixel nobody marked gets no credit and
            # does not shrink the advantages' pooled scale (identical when every pixel is marked)
            opinion = (torch.stack([s.abs() for _, s in t.history]).amax(dim=0) > 0).float().expand_as(rmap)
            hold = liked_hold(t.history).expand_as(rmap)  # [V, H, W]
            maps, weights, holds = results_to_latent_grid([rmap], [opinion], [hold], hw)
            adv = compute_advantages(maps, traj.prompts, "group", weights=weights)
            policy.update(traj, adv, gen, kl_weights=holds if policy.t.kl_coef > 0 else None)
        rewards.append(float(np.mean(per_target)))
        if on_epoch is not None:
            on_epoch(epoch + 1, rewards[-1])
    return rewards


# the command line: sessions are the studio's (pxpo.studio.store) -----------------------------------
def check_round_options(cfg) -> None:
    """Refuse bad round options (RefineConfig or StudioConfig) before anything loads, naming the option."""
    for name in ("num_steps", "epochs", "variations", "threads"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name}={getattr(cfg, name)}: must be at least 1")
    if cfg.variations < 2:
        raise ValueError(f"--variations={cfg.variations}: a round compares variations, so it needs at least 2")
    if cfg.eta <= 0:
        raise ValueError(f"--eta={cfg.eta}: the policy needs eta > 0 for a density (use 1.0)")
    if cfg.lr <= 0:
        raise ValueError(f"--lr={cfg.lr}: must be positive")
    if cfg.kl_coef < 0:
        raise ValueError(f"--kl_coef={cfg.kl_coef}: must be 0 (off) or more")
    if not 0 < cfg.timestep_fraction <= 1:
        raise ValueError(f"--timestep_fraction={cfg.timestep_fraction}: choose a value in (0, 1] (1 = every step)")


def round_settings(cfg) -> dict:
    """The settings a round records (and trains with): from RefineConfig or StudioConfig."""
    return {"epochs": cfg.epochs, "variations": cfg.variations, "lr": cfg.lr, "replay": cfg.replay,
            "kl_coef": cfg.kl_coef, "timestep_fraction": cfg.timestep_fraction}


def start_session(cfg: RefineConfig):
    """A new session in ``cfg.dir`` (the studio's format), its settings fixed from ``cfg``."""
    from pxpo.models.registry import is_embedded
    from pxpo.studio.engine import picture_size
    from pxpo.studio.store import Store

    height, width = picture_size(cfg.model)  # refuses an unknown model in words
    if is_embedded(cfg.model):
        from pxpo import world

        world.check_vocabulary([cfg.prompt])
    return Store.create(cfg.dir, {"prompt": " ".join(cfg.prompt.split()), "model": cfg.model,
                                  "finetune": cfg.finetune, "num_steps": cfg.num_steps, "guidance": cfg.guidance,
                                  "eta": cfg.eta, "height": height, "width": width,
                                  "settings": round_settings(cfg)})


def open_session(cfg: RefineConfig):
    """The session in ``cfg.dir``: opened (an earlier ``session.json`` folder converted), or started
    when there is none and no strokes were given."""
    from pxpo.studio.legacy import LEGACY_STATE, sync_refine
    from pxpo.studio.store import DB, Store

    d = Path(cfg.dir)
    if (d / LEGACY_STATE).is_file():
        sync_refine(d)
    if not (d / DB).is_file():
        if cfg.strokes:
            raise FileNotFoundError(f"{d} holds no session ({DB}); start one first: "
                                    f"pxpo refine --dir={d} --prompt=\"...\" --seed=N")
        return start_session(cfg), True
    store, defaults, meta = Store(d), RefineConfig(), Store(d).meta()
    given = {k: " ".join(cfg.prompt.split()) if k == "prompt" else getattr(cfg, k) for k in AT_START}
    differ = [k for k in AT_START if getattr(cfg, k) != getattr(defaults, k) and given[k] != meta[k]]
    if differ:
        k = differ[0]
        raise ValueError(f"the session in {d} was started with {k}={meta[k]!r}, fixed since; drop --{k}={getattr(cfg, k)!r} "
                         "or choose another --dir for a new session")
    return store, False


def choose(store, round_: int, seed: int, new: bool) -> tuple[int, int]:
    """(round, seed) of the picture the strokes are painted on; refused in words when unclear."""
    rounds = store.rounds()
    done = [r["id"] for r in rounds if r["status"] == "done"]
    rid = done[-1] if round_ < 0 else round_
    if rid not in done:
        have = next((r for r in rounds if r["id"] == rid), None)
        raise ValueError(f"--round={rid}: the session has no such round (finished rounds: "
                         f"{', '.join(map(str, done))})" if have is None else
                         f"--round={rid}: round {rid} is {have['status']}; choose a finished round "
                         f"({', '.join(map(str, done))})")
    if seed >= 0:
        return rid, seed
    seeds = store.round(rid)["picture_seeds"]
    if new or (rid == 0 and not seeds):
        return rid, 0
    if len(seeds) != 1:
        raise ValueError(f"round {rid} has pictures of seeds {', '.join(map(str, seeds))}: choose one with --seed=N")
    return rid, seeds[0]


def save_compare(store, rid: int, seed: int) -> Path:
    """``compare/rNNN_sSEED.png``: the marked picture | its strokes | the round's new picture."""
    from pxpo.images import labelled_rows, make_grid, save

    r = store.round(rid)
    before, strokes = store.marks(rid)[seed]
    after = store.read_picture(store.picture_name(rid, seed))
    grid = make_grid(torch.stack([before, strokes_overlay(before, strokes), after]), scale=4)
    path = store.path / "compare" / f"r{rid:03d}_s{seed}.png"
    path.parent.mkdir(exist_ok=True)
    save(labelled_rows([grid], [f"round {r['parent']} | strokes | round {rid} (seed {seed})"]), path)
    return path


def main(argv: list[str]) -> int:
    from pxpo.config import parse_overrides
    from pxpo.studio.engine import Engine

    cfg = parse_overrides(RefineConfig(), argv, prog="pxpo refine", description=__doc__)
    check_round_options(cfg)
    torch.set_num_threads(cfg.threads)
    store, new = open_session(cfg)
    rid, seed = choose(store, cfg.round, cfg.seed, new)
    engine = Engine(store)
    for pending in store.pending():  # committed by a run that stopped before it finished
        print(f"round {pending} was committed but not trained (a stop or crash); training it first")
        engine.train(pending)
    picture = engine.picture(rid, seed)  # drawn the first time it is asked for
    if not cfg.strokes:
        where = (f" --round={rid}" if cfg.round >= 0 else "") + \
            (f" --seed={seed}" if store.round(rid)["picture_seeds"] != [seed] else "")
        print(f"round {rid}, seed {seed}: {picture}  (paint strokes on it, then: pxpo refine --dir={cfg.dir}"
              f"{where} --strokes=FILE)")
        return 0
    meta = store.meta()
    strokes = read_strokes(cfg.strokes, meta["height"], meta["width"])
    new_round = store.submit(rid, {seed: strokes}, round_settings(cfg))  # committed before training
    engine.train(new_round)
    r = store.round(new_round)
    changes = ", ".join(f"{n} {v:.3f}" for n in ("liked", "disliked", "unmarked")
                        if (v := r["changes"][seed]["change_" + n]) is not None)
    print(f"round {new_round} (from {rid}), seed {seed}: {store.picture_file(new_round, seed)}, "
          f"{save_compare(store, new_round, seed)}  (mean |change| per pixel: {changes})")
    return 0
