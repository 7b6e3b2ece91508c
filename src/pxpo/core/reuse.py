"""``train.reuse_sampling``: when the sampling pass's UNet calls can stand in for the update's.

The first minibatch of an update is on-policy: the weights are still those that sampled, so the
Gaussian means the update would recompute are the sampler's own. The sampler can then keep them with
their autograd graph (``sample_trajectories(keep_graph=k)``) and :meth:`Policy.update` backpropagates
through them instead of running the UNet a second time. That is the same gradient (the same
functions of the same weights and inputs; only float32 sums run in another order) for one UNet
forward fewer per trained transition. It holds when

* the first minibatch is the whole epoch (``train.batch_size`` = the epoch's samples): otherwise the
  samples of later minibatches are off-policy by their turn and are recomputed anyway;
* the update backpropagates all trained timesteps at once (``train.timesteps_per_forward`` 0 or >=
  them): the kept graph can be walked back only once;
* the trained timesteps are known when sampling and come first: all of them (``timestep_fraction``
  1), or the first ones (``timestep_order=first``);
* the update's guidance is the sampler's (``train.cfg``, or ``sample.guidance`` 1).

Later minibatches and inner epochs recompute as before. ``auto`` reuses when all hold and recomputes
silently otherwise; ``always`` refuses a config where they do not; ``never`` always recomputes.
"""

from __future__ import annotations

import math

from pxpo.errors import ConfigError


def trained_steps(train, sample) -> int:
    """Transitions trained per trajectory (``train.timestep_fraction`` of ``sample.num_steps``)."""
    return max(1, math.ceil(sample.num_steps * train.timestep_fraction))


def step_etas(train, sample) -> float | list[float]:
    """The sampler's eta: ``sample.eta``, or one per step with ``sample.untrained_eta`` (>= 0) on the
    steps the update does not train when they are known when sampling: after the trained ones
    (``timestep_order=first``) or before them (``last``)."""
    n = trained_steps(train, sample)
    if sample.untrained_eta < 0 or train.timestep_order == "random" or n == sample.num_steps:
        return sample.eta
    rest = [sample.untrained_eta] * (sample.num_steps - n)
    return [sample.eta] * n + rest if train.timestep_order == "first" else rest + [sample.eta] * n


def reasons_against(train, sample) -> list[str]:
    """Why the sampling pass's graph cannot serve the first update of this config (empty: it can)."""
    n_train_t, per_epoch = trained_steps(train, sample), sample.batch_size * sample.num_batches
    why = []
    if train.batch_size < per_epoch:
        why.append(
            f"train.batch_size={train.batch_size} is less than the epoch's {per_epoch} samples, so later "
            "minibatches are off-policy by their turn (reuse needs one minibatch of the whole epoch)"
        )
    if 0 < train.timesteps_per_forward < n_train_t:
        why.append(
            f"train.timesteps_per_forward={train.timesteps_per_forward} splits the {n_train_t} trained "
            "timesteps into several backward passes (reuse needs them in one: 0)"
        )
    order_why = {
        "last": "trains the last steps, and the sampler keeps the graph of the first ones",
        "random": "picks the trained timesteps after sampling (timestep_order=first trains the first ones)",
    }
    if n_train_t < sample.num_steps and train.timestep_order in order_why:
        why.append(
            f"train.timestep_fraction={train.timestep_fraction} with timestep_order={train.timestep_order} "
            + order_why[train.timestep_order]
        )
    if not train.cfg and sample.guidance != 1.0:
        why.append(f"train.cfg=false trains without the guidance the sampler used (sample.guidance={sample.guidance})")
    return why


def check_reuse(train, sample) -> None:
    """Refuse ``train.reuse_sampling=always`` where reuse cannot work (its choices are a ``Literal``)."""
    why = reasons_against(train, sample)
    if train.reuse_sampling == "always" and why:
        raise ConfigError(
            "train.reuse_sampling=always: the sampling pass cannot stand in for the update here: "
            + "; ".join(why)
            + ". Use --train.reuse_sampling=auto to recompute when it cannot"
        )


def keep_steps(train, sample) -> int:
    """How many leading sampling steps keep their graph for the update (0: none, it recomputes):
    every step, or the first ``trained_steps`` with ``timestep_order=first``."""
    check_reuse(train, sample)
    if train.reuse_sampling == "never" or reasons_against(train, sample):
        return 0
    return trained_steps(train, sample) if train.timestep_order == "first" else sample.num_steps
