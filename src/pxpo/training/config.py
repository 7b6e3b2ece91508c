"""The one typed config tree of ``pxpo train``, saved as config.yaml in every run directory.

Defaults: the embedded model shapes-parts (shapes-tiny trained on to draw partial captions), PXPO
with per-pixel clipped ratios, and the paper's colour control on a region the model draws: make the
background blue and keep the object as the starting model drew it (colour with outside: keep, the
background read by the segmenter on the starting model's picture of the same noise), on captions
that name the object and leave the background open ("a red circle", no blue objects): the model
then varies the background, so there is something to learn from (captions that name the background
leave none), while the named object gives the evaluator a shape to check.
The recipe: opinion-weighted per-pixel advantages over the batch (kept and changed pixels compared
apart), one on-policy AdamW step of 16 trajectories per epoch at lr 2e-4 on the noisiest half of
each trajectory's steps (where layout and colour are decided), and the exact per-pixel KL to the starting model on the pixels
the reward keeps (kl_coef 1.0, kl_region hold), which kept the pictures healthy where the reward's
keep-term alone let them collapse into one colour. Sized for a 2-core CPU: 10 DDIM steps, 30 epochs.
Why each piece: docs/recipe.md. Every field is listed by ``pxpo train --help``: the first paragraph of
each field's docstring is its help line; the paragraphs after it say why the default, with what was
measured.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal


@dataclass
class ModelConfig:
    """the diffusion model and how it is fine-tuned"""

    name: str = "shapes-parts"
    """'shapes-parts' or 'shapes-tiny' (embedded), a diffusers SD/SDXL/SD3 directory, or a cached hub id

    shapes-parts is shapes-tiny trained on to draw partial captions like 'a red circle'; shapes-tiny
    draws whole captions."""
    preset: Literal["", "sd15", "sd21", "sdxl", "sd35", "flux"] = ""
    """a model family: its size and RL settings fill every option not given ('' = none; backends/presets.py)

    DDPO's settings for sd15, sd21 and sdxl; Flow-GRPO's for sd35; BoxFlow-GRPO's for flux (docs/howto/models.md 'Model presets')."""
    finetune: Literal["auto", "full", "lora"] = "auto"
    """auto: full fine-tuning for the embedded models and those `pxpo pretrain` wrote, LoRA for the others

    The embedded models have 4M parameters and learn fastest fully fine-tuned."""
    lora_rank: int = 4
    """LoRA rank"""
    lora_alpha: float = 4.0
    """LoRA alpha (scale = alpha / rank)"""
    lora_targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    """the denoiser's modules that get LoRA adapters"""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """run the denoiser under autocast (fp16 for GPUs; bf16 runs on CPUs too); guidance and log-probs stay fp32"""
    frozen_dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    """precision of the frozen weights (VAE, text encoders, LoRA's base, the starting copy); half needs mixed_precision

    Trained weights stay fp32."""
    gradient_checkpointing: bool = False
    """trade compute for memory in the denoiser"""
    precompute_prompt_embeds: bool = False
    """encode each distinct prompt once and keep its embeddings; the text encoders stay off the accelerator"""
    allow_download: bool = False
    """let diffusers download a hub model that is not cached"""


@dataclass
class PromptConfig:
    """where prompts come from"""

    name: str = "shapes-world"
    """prompt source: shapes-world, list, file, fixed, or module:factory"""
    params: dict[str, Any] = field(default_factory=lambda: {"parts": ["colour", "shape"], "exclude_colours": ["blue"]})
    """parameters of the prompt source, e.g. {split: train} or {prompts: [a cat]}

    The default gives 'a red circle'-like captions of every object colour but the reward's blue, the
    background left open."""
    negative: str = ""
    """negative prompt (the unconditional branch of classifier-free guidance)"""


@dataclass
class RewardConfig:
    """the feedback: a per-pixel map and/or a scalar per image"""

    name: str = "colour"
    """reward by name (`pxpo rewards` lists them) or module:function"""
    params: dict[str, Any] = field(
        default_factory=lambda: {"target": "blue", "region": "background", "outside": "keep"}
    )
    """parameters of the reward"""
    weights: dict[str, float] = field(default_factory=dict)
    """a weighted sum of rewards {name: weight}; when set, `name` is ignored and `params` holds each one's by name"""
    latent_pool: Literal["area", "max", "min"] = "area"
    """how a reward map is pooled onto the latent grid (area = mean)"""
    reference: Literal["auto", "always", "never"] = "auto"
    """draw reference images (the starting model, same prompt and noise) for the reward; auto: when it needs them

    They appear in metadata['reference'] and cost one extra sampling pass; colour with outside=keep
    needs them."""


@dataclass
class SampleConfig:
    """trajectory sampling"""

    num_steps: int = 10
    """sampling steps per trajectory

    10 keeps a CPU epoch short; DDPO used 50 on SD."""
    eta: float = 1.0
    """DDIM eta, > 0 (1.0 = DDPM-like posterior noise; the SDE step's noise level for flow models)"""
    untrained_eta: float = 0.0
    """eta of the steps the update does not train (timestep_order first or last): 0 = deterministic; -1 = sample.eta everywhere

    0 is MixGRPO's ODE outside the trained window. On the default task it learned more and far more
    steadily (6 of 6 seeds on two models at +0.645 to +0.798); on the object task it moved more but
    less locally (docs/recipe.md, finding 23). With timestep_order=random or timestep_fraction 1
    every step samples at sample.eta."""
    guidance: float = 5.0
    """classifier-free guidance scale"""
    batch_size: int = 16
    """trajectories per sampling batch"""
    num_batches: int = 1
    """sampling batches per epoch"""
    group_size: int = 1
    """trajectories per shared-noise group: the same prompt and x_T with fresh step noise (1 = none)

    Within a group the same pixel shows the same place of the same layout; with
    train.advantages=group each pixel is compared within its group."""
    height: int = 0
    """image height (0 = the model's default)"""
    width: int = 0
    """image width (0 = the model's default)"""


@dataclass
class TrainConfig:
    """the policy-gradient update"""

    algorithm: Literal["pxpo", "ddpo"] = "pxpo"
    """pxpo: per-pixel credit from reward maps; ddpo: one scalar per image"""
    objective: Literal["clipped", "sf"] = "clipped"
    """clipped: PPO-style importance ratios; sf: the score function"""
    credit: Literal["pixel", "detached", "mask"] = "pixel"
    """PXPO's per-pixel design: pixel (each pixel's advantage and ratio), detached (each pixel's advantage,
    the image's ratio) or mask (the image's advantage on the pixels with an opinion, each pixel's ratio)

    pixel is the paper's (and BoxFlow-GRPO's); detached is the option of Flow-Factory and
    DenseFlow-GRPO; mask is DenseFlow-GRPO's use of a heatmap (here the reward's weight) on a
    per-image advantage (core/objectives.py)."""
    lr: float = 2e-4
    """AdamW learning rate

    DDPO used 3e-4 with LoRA and 1e-5 for full fine-tuning of SD. On shapes-tiny 1e-4 collapsed the
    model into red noise within 40 epochs without the KL anchor; with it (kl_coef 1, kl_region hold)
    and the deterministic untrained tail, 2e-4 learned more than 1e-4 on the suite and kept the
    shapes (docs/recipe.md, finding 27)."""
    weight_decay: float = 1e-4
    """AdamW weight decay"""
    adam_beta1: float = 0.9
    """AdamW beta1"""
    adam_beta2: float = 0.999
    """AdamW beta2"""
    adam_eps: float = 1e-8
    """AdamW epsilon"""
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"
    """adamw (torch) or adamw8bit (bitsandbytes' 8-bit states: pip install 'pxpo[bnb]')"""
    batch_size: int = 16
    """trajectories per optimizer step (gradients summed over their trained timesteps)"""
    inner_epochs: int = 1
    """passes over each epoch's samples"""
    timestep_fraction: float = 0.5
    """fraction of each trajectory's timesteps trained on (which ones: timestep_order)

    0.5 with order 'first' trains the noisiest half, where layout and colour are decided: on the
    default task +0.581 against +0.310 with every step, locality 0.34 against 0.53, in half the
    training time (docs/recipe.md, finding 18). The model presets train every step (1.0), as DDPO
    did; so do the efficiency suite and pxpo refine, measured that way."""
    timesteps_per_forward: int = 0
    """trained timesteps batched into one forward + backward (0 = all: fastest; lower it when memory runs out)"""
    reuse_sampling: Literal["auto", "always", "never"] = "auto"
    """backpropagate the first minibatch through the sampling pass's own calls (auto: when the config allows)

    The same gradient with one denoiser forward fewer per trained transition. The config allows it
    with one minibatch of the whole epoch, timesteps_per_forward 0, timestep_fraction 1 or
    timestep_order first, and cfg; 'always' refuses a config that does not. Memory: the sampling
    pass keeps the graph of every trained step until the update, as large as the update's own graph
    with timesteps_per_forward 0; for large models use gradient checkpointing or 'never'
    (core/reuse.py)."""
    timestep_order: Literal["first", "last", "random"] = "first"
    """which timesteps timestep_fraction keeps: the noisiest (first), the least noisy (last: the steps
    before them then sample at sample.untrained_eta), or random per sample (DDPO)

    last left the scenes tasks unmoved: at the quiet steps a small shift is a large KL, so the anchor
    tightens throughout (docs/results/scenes.md, "Anchoring every step, or training every step")."""
    clip_range: float = 0.0
    """PPO clip range; 0 = auto: 1e-4 for DDPO, 1e-4*sqrt(h*w) for PXPO's per-pixel ratios"""
    adv_clip_max: float = 5.0
    """advantages are clipped to [-adv_clip_max, adv_clip_max]"""
    advantages: Literal["batch", "per-prompt", "group"] = "batch"
    """the baseline: the batch, each prompt's history (DDPO's stat tracking), or each group (GRPO)

    A group is a shared-noise group of sample.group_size, or each prompt's samples when that is 1."""
    adv_norm: Literal["pixel", "global"] = "pixel"
    """map advantages: per-pixel baseline and one pooled scale, or one baseline and scale over all pixels

    'global' is for rewards that follow the object, e.g. segment-shape (core/advantages.py)."""
    keep_apart: bool = True
    """give pixels a reward keeps and pixels it asks to change baselines of their own (colour, outside: keep)

    Each pixel's baseline comes only from the samples that ask the same of it (to change, or to
    keep), not a mix of both (core/advantages.py). On object yellow it turned +0.001 into +0.044
    over 3 seeds (docs/recipe.md, finding 9)."""
    buffer_size: int = 32
    """per-prompt: rewards kept per prompt"""
    min_count: int = 16
    """per-prompt: rewards needed before a prompt's own statistics are used"""
    kl_coef: float = 1.0
    """weight of the per-pixel KL to the starting model on every trained step (0 = off)

    It holds what the reward does not ask to change (objectives.kl_to_reference)."""
    kl_target: float = 0.01
    """adaptive KL: move kl_coef after each update (down by at most kl_loosen_rate, up by at most kl_tighten_rate) toward
    holding the mean KL per anchored pixel at this value; 0 keeps kl_coef fixed

    The right anchor strength depends on the task: one that barely moves the anchored pixels needs less, one
    that drags them needs more (objectives.adapt_kl_coef). kl_coef is then the starting weight
    (docs/results/scenes.md)."""
    kl_tighten_rate: float = 0.05
    """with train.kl_target: the largest share by which kl_coef rises in one update (it falls by at most kl_loosen_rate)

    A task whose change spills past what it asks for early on locks a faster-rising anchor before the
    asked pixels move (at 0.2, sky-blue's three seeds gained +0.145 to +0.565; docs/results/scenes.md)."""
    kl_loosen_rate: float = 0.05
    """with train.kl_target: the largest share by which kl_coef falls in one update

    Before the policy moves, the KL is about 0 and the weight falls at this rate whatever the task. At
    0.2 (the earlier default) it fell from 1 to 0.1 in ten updates, and a run that then drifted past
    its target could not tighten in time; at 0.05, as slowly as it rises, every scenes run stayed
    healthy and the change was more local, for less gain on some tasks (docs/results/scenes.md)."""
    kl_region: list[float] | str = "unasked"
    """where the KL applies: unasked (what the reward keeps, and what it has no opinion on), hold (only what it
    keeps), all, a named region ('right', ...) or a box [x0, y0, x1, y1]

    'unasked' anchors, per picture, the pixels the reward asks to keep (colour with outside: keep) and
    those a reward with outside: neutral leaves without an opinion, and leaves the asked pixels to the
    reward ('change only here'). 'hold' anchors only the kept ones, and every pixel when the reward
    keeps nothing. A box is in fractions of the picture."""
    kl_steps: Literal["trained", "all"] = "trained"
    """which steps the KL anchors: those the update trains (timestep_fraction of them), or every step

    'all' adds the anchor's KL on the untrained steps too, with no policy-gradient term there (one more
    network call per minibatch). They share the trained steps' weights, so an update moves them as well;
    a step sampled without noise (sample.untrained_eta=0) is charged as if sampled at sample.eta."""
    loss_norm: Literal["image", "region"] = "image"
    """average the objective and the KL over the whole picture, or over the pixels each covers

    'region': the objective over the pixels where the reward has an opinion, the KL over the pixels
    it holds, so kl_coef balances them alike whatever the region's size."""
    max_grad_norm: float = 1.0
    """gradient-norm clip"""
    ema_decay: float = 0.0
    """> 0: evaluate and export an exponential moving average of the trained weights (0: the weights as trained)

    Sampling for training uses the weights as trained; evaluation, exported weights/ and the run's
    final pictures use the average, which takes diffusers' EMAModel warm-up: its decay after n
    updates is min(ema_decay, (1 + n) / (10 + n)). The run ends with the average in the network."""
    max_nonfinite: int = 3
    """non-finite updates in a row before the run stops with a checkpoint (each one is skipped)"""
    cfg: bool = True
    """use classifier-free guidance at training as at sampling (exact ratios)"""
    ratio_check: Literal["error", "warn", "off"] = "error"
    """the on-policy check: the first minibatch, before any step, re-scores the sampler's log-probs (ratio 1)

    Its largest per-sample gap is logged as ratio_gap (nats per latent element); above
    core.policy.RATIO_TOLERANCE sampling and re-scoring disagree (dropout, precision, a changed
    scheduler), and the run stops with what to change ('error') or logs a warning ('warn')."""


@dataclass
class ExperimentalConfig:
    """variants measured as worse than the defaults, kept to reproduce the findings (docs/recipe.md)"""

    step_weight: Literal["none", "balanced"] = "none"
    """balanced: divide each trained step's term by its step's gain (DDIM only)

    The gain is |d mean / d output| / std (sampling.step_gain): it evens out the schedule's share of
    each step's gradient, not the denoiser's. On the default task with every step trained, +0.326
    against +0.310 without (docs/recipe.md, finding 21), and worse than training the noisiest half."""
    part_scale: Literal["pooled", "apart"] = "pooled"
    """with train.keep_apart, apart: scale the kept and the changed pixels' advantages each by its own scale

    pooled: one scale, so a kept part that hardly varies gets small advantages; apart makes keeping
    the picture weigh as much as changing it."""
    hold_pool: Literal["area", "max"] = "area"
    """the kept pixels on the latent grid: area (the share of a latent pixel's footprint kept) or max (any)"""
    group_scale: Literal["batch", "group"] = "batch"
    """with train.advantages=group, group: divide each group by its own std (GRPO) instead of one pooled scale

    It blows up the noise of groups that hardly vary."""
    adv_norm: Literal["pixel-std"] | None = None
    """pixel-std: a per-pixel scale as well as a per-pixel baseline, in place of train.adv_norm=pixel

    It blows noise up to unit size wherever the reward hardly varies across samples."""
    kl_target_ratio: float = 0.0
    """with train.kl_target, > 0: the target of each update is this share of the mean KL per asked pixel
    (those the reward wants changed) instead of train.kl_target

    It was meant to hold the anchored pixels to a fixed fraction of the asked ones' drift, whatever the
    task's pace. The policy's drift is spatially even (the KL per anchored pixel tracks the KL per asked
    one), so the weight climbed to 165 and froze 10 of 12 scenes tasks (docs/results/scenes.md)."""


@dataclass
class RunConfig:
    """the run"""

    model: ModelConfig = field(default_factory=ModelConfig)
    """the diffusion model and how it is fine-tuned"""
    prompts: PromptConfig = field(default_factory=PromptConfig)
    """where prompts come from"""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """the feedback: a per-pixel map and/or a scalar per image"""
    sample: SampleConfig = field(default_factory=SampleConfig)
    """trajectory sampling"""
    train: TrainConfig = field(default_factory=TrainConfig)
    """the policy-gradient update"""
    experimental: ExperimentalConfig = field(default_factory=ExperimentalConfig)
    """variants measured as worse than the defaults, kept to reproduce the findings (docs/recipe.md)"""
    epochs: int = 30
    """sample -> reward -> update rounds"""
    seed: int = 0
    """seed of prompts, noise and initialisation"""
    out_dir: str = "runs"
    """parent directory of run directories"""
    run_name: str = ""
    """run directory name (default: a timestamp and a random suffix); a run refuses a folder that exists"""
    eval_every: int = 6
    """epochs between evaluations on fixed prompts and seeds (0 = only first and last)"""
    eval_samples: int = 16
    """evaluation images (fixed prompts and noise)"""
    eval_seed: int = 1234
    """seed of the evaluation prompts and noise"""
    save_every: int = 0
    """epochs between checkpoints (0 = only at the end; Ctrl-C also writes one)"""
    keep_checkpoints: int = 2
    """complete checkpoints kept in checkpoint/ (the newest is checkpoint/latest)"""
    resume: str = ""
    """a run directory to continue with its config.yaml; options given with it override the saved ones

    Options that cannot change mid-run are refused (training/resume.py)."""
    threads: int = 2
    """torch CPU threads"""
    world_size: int = 0
    """processes that train the run, recorded at the start by the launcher (0 = not recorded)

    torchrun --nproc_per_node / accelerate launch --num_processes set it; batches are global and
    split over the processes, and a resume needs as many."""
    tensorboard: bool = True
    """also write TensorBoard event files"""

    MOVED: ClassVar[dict[str, str]] = {
        "train.step_weight": "experimental.step_weight",
        "train.part_scale": "experimental.part_scale",
        "train.group_scale": "experimental.group_scale",
        "reward.hold_pool": "experimental.hold_pool",
        "train.kl_target_ratio": "experimental.kl_target_ratio",
    }
    """options that moved; config.yaml files of older runs load with them in their new place"""

    @classmethod
    def upgrade(cls, data: dict) -> dict:
        """A config file written before the experimental section, with its options in their new place
        (train.adv_norm=pixel-std becomes train.adv_norm=pixel + experimental.adv_norm=pixel-std)."""
        data = copy.deepcopy(data)
        for old, new in cls.MOVED.items():
            section, key = old.split(".")
            if isinstance(data.get(section), dict) and key in data[section]:
                data.setdefault("experimental", {}).setdefault(new.split(".")[1], data[section].pop(key))
        train = data.get("train")
        if isinstance(train, dict) and train.get("adv_norm") == "pixel-std":
            train["adv_norm"] = "pixel"
            data.setdefault("experimental", {}).setdefault("adv_norm", "pixel-std")
        return data
