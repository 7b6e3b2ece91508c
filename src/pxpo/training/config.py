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
Why each piece: docs/recipe.md. Every field is listed by ``pxpo train --help``.
"""
from __future__ import annotations

from dataclasses import dataclass

from pxpo.config import opt, section


@dataclass
class ModelConfig:
    name: str = opt("shapes-parts", "'shapes-parts' (embedded, draws partial captions like 'a red circle'), "
                    "'shapes-tiny' (embedded, whole captions), a diffusers SD or SDXL directory, or a cached hub id")
    preset: str = opt("", "'sd15', 'sd21', 'sdxl' or 'sd35': the model family's size and its RL settings (DDPO's; "
                      "Flow-GRPO's for sd35) for every option "
                      "not given (backends/presets.py; README 'Model presets'); '' = none")
    finetune: str = opt("auto", "'full', 'lora', or 'auto': full for shapes-tiny and models `pxpo pretrain` "
                        "wrote (4M parameters, they learn fastest), LoRA for everything else")
    lora_rank: int = opt(4, "LoRA rank")
    lora_alpha: float = opt(4.0, "LoRA alpha (scale = alpha / rank)")
    lora_targets: list[str] = opt(["to_q", "to_k", "to_v", "to_out.0"], "UNet modules that get LoRA adapters")
    mixed_precision: str = opt("no", "'no', 'fp16' or 'bf16': the UNet runs under autocast; the guidance, DDIM and "
                               "log-prob arithmetic stay fp32 (fp16 is for GPUs; bf16 runs on CPUs too)")
    frozen_dtype: str = opt("fp32", "'fp32', 'bf16' or 'fp16': the frozen weights (VAE, text encoders; with LoRA the "
                            "UNet's base weights; with full fine-tuning the starting-model copy) in this precision; "
                            "half needs mixed_precision. Trained weights stay fp32")
    gradient_checkpointing: bool = opt(False, "trade compute for memory in the UNet")
    precompute_prompt_embeds: bool = opt(False, "encode each distinct prompt once and keep its embeddings; the text "
                                         "encoders stay on the CPU, off the accelerator")
    allow_download: bool = opt(False, "let diffusers download a hub model that is not cached")


@dataclass
class PromptConfig:
    name: str = opt("shapes-world", "prompt source: shapes-world, list, file, fixed, or module:factory")
    params: dict = opt({"parts": ["colour", "shape"], "exclude_colours": ["blue"]},
                       "parameters of the prompt source, e.g. {split: train} or {prompts: [a cat]} (default: "
                       "'a red circle'-like captions of every object colour but the reward's blue, background open)")
    negative: str = opt("", "negative prompt (the unconditional branch of classifier-free guidance)")


@dataclass
class RewardConfig:
    name: str = opt("colour", "reward by name (`pxpo rewards` lists them) or module:function")
    params: dict = opt({"target": "blue", "region": "background", "outside": "keep"}, "parameters of the reward")
    weights: dict = opt({}, "weighted sum of rewards {name: weight}; when set, `name` is ignored and "
                        "`params` holds each component's parameters by name")
    latent_pool: str = opt("area", "reward map -> latent grid: area (mean), max or min pooling")
    hold_pool: str = opt("area", "the kept pixels (hold) -> latent grid: 'area' (the share of each latent pixel's "
                         "footprint kept) or 'max' (held whole when any of it is kept)")
    reference: str = opt("auto", "reference images (the frozen starting model, same prompt and noise) in "
                         "metadata['reference']: 'auto' (when a reward needs them, e.g. colour with "
                         "outside=keep), 'always' or 'never'; they cost one extra sampling pass")


@dataclass
class SampleConfig:
    num_steps: int = opt(10, "DDIM steps per trajectory (10 keeps a CPU epoch short; DDPO used 50 on SD)")
    eta: float = opt(1.0, "DDIM eta, > 0 (1.0 = DDPM-like posterior noise)")
    untrained_eta: float = opt(0.0, "eta of the steps that are not trained, those after the first "
                               "train.timestep_fraction with timestep_order=first: 0 = deterministic DDIM there "
                               "(MixGRPO's ODE outside the trained window); -1 = sample.eta on every step. On the default "
                               "task 0 learned more and far more steadily (6 of 6 seeds on two models at +0.645 to "
                               "+0.798); on the object task it moved more but less locally (docs/recipe.md, finding 23). "
                               "With timestep_order=random or timestep_fraction 1 every step samples at sample.eta")
    guidance: float = opt(5.0, "classifier-free guidance scale")
    batch_size: int = opt(16, "trajectories per sampling batch")
    num_batches: int = opt(1, "sampling batches per epoch")
    group_size: int = opt(1, "shared-noise groups: trajectories drawn from the same prompt and the same x_T "
                          "(fresh step noise), so the same pixel shows the same place of the same layout; "
                          "with train.advantages=group each pixel is compared within its group")
    height: int = opt(0, "image height (0 = the model's default)")
    width: int = opt(0, "image width (0 = the model's default)")


@dataclass
class TrainConfig:
    algorithm: str = opt("pxpo", "'pxpo' (per-pixel credit from reward maps) or 'ddpo' (one scalar per image)")
    objective: str = opt("clipped", "'clipped' (PPO-style importance ratios) or 'sf' (score function)")
    lr: float = opt(2e-4, "AdamW learning rate (DDPO: 3e-4 with LoRA, 1e-5 full fine-tuning of SD). On shapes-tiny "
                    "1e-4 collapsed the model into red noise within 40 epochs without the KL anchor; with it "
                    "(kl_coef 1, kl_region hold) and the deterministic untrained tail, 2e-4 learned more than "
                    "1e-4 on the suite and kept the shapes (docs/recipe.md, finding 27)")
    weight_decay: float = opt(1e-4, "AdamW weight decay")
    adam_beta1: float = opt(0.9, "AdamW beta1")
    adam_beta2: float = opt(0.999, "AdamW beta2")
    adam_eps: float = opt(1e-8, "AdamW epsilon")
    optimizer: str = opt("adamw", "'adamw' (torch) or 'adamw8bit' (bitsandbytes' 8-bit states: pip install "
                         "'pxpo[bnb]')")
    batch_size: int = opt(16, "trajectories per optimizer step (gradients summed over their trained timesteps)")
    inner_epochs: int = opt(1, "passes over each epoch's samples")
    timestep_fraction: float = opt(0.5, "fraction of each trajectory's timesteps trained on (which ones: "
                                   "timestep_order). 0.5 with order 'first' trains the noisiest half, where layout "
                                   "and colour are decided: on the default task +0.581 against +0.310 with every "
                                   "step, locality 0.34 against 0.53, in half the training time (docs/recipe.md, "
                                   "finding 18). The model presets train every step (1.0), as DDPO did; so do the efficiency suite "
                                   "and pxpo refine, measured that way")
    timesteps_per_forward: int = opt(0, "trained timesteps of a minibatch batched into one UNet forward + backward "
                                     "(0 = all of them: fewest, largest calls, fastest; memory grows with it, "
                                     "so lower it, e.g. to 1, when a large model runs out of memory)")
    reuse_sampling: str = opt("auto", "the first, on-policy minibatch backpropagates through the sampling pass's own "
                              "UNet calls instead of running them again (the same gradient, one UNet forward fewer "
                              "per trained transition): 'auto' (when the config allows: one minibatch of the whole "
                              "epoch, timesteps_per_forward 0, timestep_fraction 1 or timestep_order first, cfg), "
                              "'always' (refuse a config that does not) or 'never'. Memory: the sampling pass keeps "
                              "the graph of every trained step until the update, as large as the update's own "
                              "graph with timesteps_per_forward 0; for large models use gradient checkpointing "
                              "or 'never' (core/reuse.py)")
    step_weight: str = opt("none", "how each trained step's term is weighted: 'none' (its log-probability as it is, "
                           "as DDPO does) or 'balanced' (divided by the step's gain |d mean / d output| / std, "
                           "sampling.step_gain: it evens out the schedule's share of each step's gradient, not the "
                           "UNet's; on the default task with every step trained, +0.326 against +0.310 without: "
                           "docs/recipe.md, finding 21)")
    timestep_order: str = opt("first", "which timesteps timestep_fraction keeps: 'random' (shuffled per sample, "
                              "DDPO) or 'first' (the noisiest, where layout and colour are decided)")
    clip_range: float = opt(0.0, "PPO clip range; 0 = auto: 1e-4 for DDPO, 1e-4*sqrt(h*w) for PXPO's per-pixel ratios")
    adv_clip_max: float = opt(5.0, "advantages are clipped to [-adv_clip_max, adv_clip_max]")
    advantages: str = opt("batch", "baseline: 'batch', 'per-prompt' (DDPO stat tracking) or 'group' (within each "
                          "shared-noise group of sample.group_size, or each prompt's samples when it is 1: GRPO)")
    group_scale: str = opt("batch", "group advantages' scale: 'batch' (one scale pooled over all groups' residuals) "
                           "or 'group' (each group's own std, GRPO; blows up groups that hardly vary)")
    adv_norm: str = opt("pixel", "how map advantages are normalised: 'pixel' (per-pixel baseline, one pooled scale), "
                        "'pixel-std' (per-pixel scale too) or 'global' (one baseline and scale over all "
                        "pixels: for rewards that follow the object, e.g. segment-shape); see core/advantages.py")
    keep_apart: bool = opt(True, "with a reward that asks some pixels to change and keeps the rest as the starting "
                           "model drew them (colour, outside: keep): each pixel's baseline comes only from the samples "
                           "that ask the same of it (to change, or to keep), not a mix of both (advantages.py). On "
                           "object yellow it turned +0.001 into +0.044 over 3 seeds (docs/recipe.md, finding 9)")
    part_scale: str = opt("pooled", "with keep_apart: 'pooled' scales the change and keep advantages by one pooled "
                          "scale (a kept part that hardly varies gets small advantages) or 'apart' (each part by "
                          "its own, so keeping the picture weighs as much as changing it)")
    buffer_size: int = opt(32, "per-prompt: rewards kept per prompt")
    min_count: int = opt(16, "per-prompt: rewards needed before a prompt's own statistics are used")
    kl_coef: float = opt(1.0, "weight of a per-pixel KL penalty to the starting model on every trained step "
                         "(objectives.kl_to_reference): holds what the reward does not ask to change; 0 = off")
    kl_region: list[float] | str = opt("hold", "where the KL penalty applies: 'all', a named region of the colour reward "
                            "('right', 'border', ...), a box [x0, y0, x1, y1] in fractions, or 'hold': per picture, "
                            "the pixels the reward asks to keep (colour with outside: keep): hold those pixels, "
                            "leave the rest to the reward ('change only here')")
    loss_norm: str = opt("image", "how the objective and the KL are averaged: 'image' (over every pixel of the picture) "
                         "or 'region' (the objective over the pixels where the reward has an opinion, the KL over "
                         "the pixels it holds, so kl_coef balances them alike whatever the region's size)")
    max_grad_norm: float = opt(1.0, "gradient-norm clip")
    max_nonfinite: int = opt(3, "optimizer steps with a non-finite loss or gradient are skipped (metric "
                             "skipped_steps); after this many in a row the run stops with a checkpoint and a diagnosis")
    cfg: bool = opt(True, "use classifier-free guidance at training as at sampling (exact ratios)")


@dataclass
class RunConfig:
    model: ModelConfig = section(ModelConfig, "the diffusion model and how it is fine-tuned")
    prompts: PromptConfig = section(PromptConfig, "where prompts come from")
    reward: RewardConfig = section(RewardConfig, "the feedback: a per-pixel map and/or a scalar per image")
    sample: SampleConfig = section(SampleConfig, "trajectory sampling")
    train: TrainConfig = section(TrainConfig, "the policy-gradient update")
    epochs: int = opt(30, "sample -> reward -> update rounds")
    seed: int = opt(0, "seed of prompts, noise and initialisation")
    out_dir: str = opt("runs", "parent directory of run directories")
    run_name: str = opt("", "run directory name (default: a timestamp to the millisecond plus a random suffix); "
                        "a run refuses a folder that exists")
    eval_every: int = opt(6, "epochs between evaluations on fixed prompts and seeds (0 = only first and last)")
    eval_samples: int = opt(16, "evaluation images (fixed prompts and noise)")
    eval_seed: int = opt(1234, "seed of the evaluation prompts and noise")
    save_every: int = opt(0, "epochs between checkpoints (0 = only at the end; Ctrl-C also writes one)")
    keep_checkpoints: int = opt(2, "complete checkpoints kept in checkpoint/ (the newest is checkpoint/latest)")
    resume: str = opt("", "a run directory to continue, in that directory, with its config.yaml; options given "
                      "with it override the saved ones (those that cannot change mid-run are refused)")
    threads: int = opt(2, "torch CPU threads")
    world_size: int = opt(0, "processes that train the run, recorded in config.yaml at the start (set by the launcher: "
                          "torchrun --nproc_per_node / accelerate launch --num_processes; batches are global and split "
                          "over them); a resume needs as many (0 = not recorded)")
    tensorboard: bool = opt(True, "also write TensorBoard event files")
