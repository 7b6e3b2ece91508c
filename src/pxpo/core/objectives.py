"""The policy-gradient objectives of DDPO and PXPO, one timestep at a time.

Notation: for one transition x_t -> x_{t-1} of a batch, ``log_prob`` and ``old_log_prob`` are
per-element log-densities [B, C, h, w] under the current and the sampling policy; ``adv`` is a
scalar advantage [B] (DDPO) or a per-latent-pixel advantage map [B, h, w] (PXPO). Each function
returns (loss, stats); minimising the loss ascends the objective. The trainer sums these over the
trained timesteps (gradient accumulation), as DDPO does.

Normalisation (one convention for all four, so they are comparable): log-likelihoods are *means*
over the C*h*w latent elements, as in ddpo-pytorch. A sum would make whole-image ratios overflow
(a 1.01 per-element ratio over 16k elements is ~1e70). For PXPO the paper's pixel likelihood is the
*sum* over the latent channels; we take the mean over channels and pixels, which is the paper's
sum times the constant 1 / (C*h*w). With that constant, a spatially constant advantage map gives
exactly DDPO's loss and gradient.

Each latent pixel's log-likelihood still depends on the whole x_t through the network: PXPO makes
only the *credit* local (pixel (i, j)'s reward multiplies only pixel (i, j)'s log-likelihood
gradient), not the model.
"""

from __future__ import annotations

import math

import torch


def _ratio_stats(log_ratio: torch.Tensor, ratio: torch.Tensor, clip_range: float) -> dict[str, torch.Tensor]:
    """approx_kl = 0.5 * mean(log_ratio^2); clipfrac = mean(|ratio - 1| > clip_range)."""
    return {
        "approx_kl": 0.5 * log_ratio.detach().pow(2).mean(),
        "clipfrac": ((ratio.detach() - 1).abs() > clip_range).float().mean(),
        "ratio": ratio.detach().mean(),
    }


def ddpo_sf(log_prob, old_log_prob, adv):
    """DDPO score function:  L = -mean_b( A_b * mean_{c,i,j} log p_theta(x_{t-1} | x_t, c) ).

    grad L = -E[ A * grad log p ], DDPO_SF's estimator (one update per sampling round).
    log_prob [B, C, h, w]; adv [B].
    """
    lp = log_prob.mean(dim=(1, 2, 3))  # [B]
    loss = -(adv * lp).mean()
    log_ratio = lp - old_log_prob.mean(dim=(1, 2, 3))
    return loss, _ratio_stats(log_ratio, log_ratio.exp(), 0.0)


def ddpo_clipped(log_prob, old_log_prob, adv, clip_range: float = 1e-4):
    """DDPO importance sampling with PPO's clip (DDPO_IS):

    rho_b = exp( mean_{c,i,j} (log p_theta - log p_old) )                               [B]
    L     = mean_b max( -A_b rho_b, -A_b clamp(rho_b, 1 - eps, 1 + eps) )
    """
    log_ratio = (log_prob - old_log_prob).mean(dim=(1, 2, 3))  # [B]
    ratio = log_ratio.exp()
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    return loss, _ratio_stats(log_ratio, ratio, clip_range)


def pxpo_sf(log_prob, old_log_prob, adv_map):
    """PXPO score function (Kordzanganeh et al. 2024), each latent pixel credited by its own advantage:

        grad J = E[ sum_ij A_ij * grad log p_theta(x_{t-1}^{ij} | x_t, c) ]
        L      = -mean_b mean_{ij} ( A_bij * mean_c log p_theta(x_{t-1}^{cij} | x_t, c) )

    log_prob [B, C, h, w]; adv_map [B, h, w]. With A_bij = A_b for all ij this equals ddpo_sf.
    """
    lp = log_prob.mean(dim=1)  # [B, h, w]  the pixel's log-likelihood (channel mean)
    loss = -(adv_map * lp).mean()
    log_ratio = lp - old_log_prob.mean(dim=1)
    return loss, _ratio_stats(log_ratio, log_ratio.exp(), 0.0)


def pxpo_clipped(log_prob, old_log_prob, adv_map, clip_range: float = 1e-3):
    """PXPO with per-pixel ratios and PPO's clip:

        rho_bij = exp( mean_c (log p_theta - log p_old)(x_{t-1}^{cij}) )                   [B, h, w]
        L       = mean_{b,ij} max( -A_bij rho_bij, -A_bij clamp(rho_bij, 1 - eps, 1 + eps) )

    Each pixel has its own trust region: a pixel whose likelihood already moved far stops
    pulling, while others still learn. The ratio is a geometric mean over the pixel's C channels
    (the same normalisation as DDPO's whole-image ratio, which is the geometric mean over all C*h*w
    elements), so with a spatially constant map and equal per-pixel ratios this is ddpo_clipped.
    A per-pixel log-ratio averages over C elements instead of C*h*w, so it fluctuates about
    sqrt(h*w) times more than DDPO's: the trainer's default clip range scales DDPO's 1e-4 by
    sqrt(h*w) (16x on the 16x16 embedded model, 64x on SD's 64x64 latents) so that about the same
    share of pixels is clipped as of images under DDPO.
    """
    log_ratio = (log_prob - old_log_prob).mean(dim=1)  # [B, h, w]
    ratio = log_ratio.exp()
    unclipped = -adv_map * ratio
    clipped = -adv_map * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    return loss, _ratio_stats(log_ratio, ratio, clip_range)


def pxpo_detached(log_prob, old_log_prob, adv_map, clip_range: float = 1e-4):
    """PXPO with the detached ratio (``train.credit=detached``): each pixel's advantage, the image's ratio
    as the value and each pixel's own log-likelihood as the gradient (the option of that name in
    Flow-Factory's and DenseFlow-GRPO's code; GSPO-token's form):

        rho_b   = exp( mean_{c,i,j} (log p_theta - log p_old) )                              [B]
        r_bij   = sg(rho_b) * exp( lp_bij - sg(lp_bij) )       value rho_b, gradient rho_b grad lp_bij
        L       = mean_{b,ij} max( -A_bij r_bij, -A_bij clamp(r_bij, 1 - eps, 1 + eps) )

    lp_bij is the pixel's channel-mean log-likelihood. The clip acts on the image's ratio, so eps is
    DDPO's. On the first, on-policy step (rho = 1) its gradient is pxpo_clipped's; the two differ when
    several steps reuse an epoch's samples (train.inner_epochs, several minibatches).
    """
    lp = log_prob.mean(dim=1)  # [B, h, w]
    log_ratio = (log_prob - old_log_prob).mean(dim=(1, 2, 3))  # [B] the image's
    rho = log_ratio.exp()
    r = rho.detach()[:, None, None] * (lp - lp.detach()).exp()  # [B, h, w]
    unclipped = -adv_map * r
    clipped = -adv_map * r.clamp(1 - clip_range, 1 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    return loss, _ratio_stats(log_ratio, rho, clip_range)


def masked_advantages(adv: torch.Tensor, mask: torch.Tensor | None, hw: tuple[int, int]) -> torch.Tensor:
    """``train.credit=mask`` (DenseFlow-GRPO's design): the per-image advantage [B] spread over the
    latent pixels where the reward has an opinion, ``mask`` [B, h, w] in [0, 1] (None: every pixel):

        A_bij = A_b * m_bij
    """
    m = torch.ones(len(adv), *hw, device=adv.device) if mask is None else mask.to(adv)
    return adv.view(-1, 1, 1) * m


def kl_to_reference(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-pixel KL of the policy's step from the starting model's step (DPOK-style regulariser):

        KL( N(mu_theta, s^2 I) || N(mu_ref, s^2 I) )_ij = mean_c (mu_theta - mu_ref)_cij^2 / (2 s^2)

    Both Gaussians share the DDIM std s, so the KL is exact and differentiable (no sampling).
    mean, ref_mean [B, C, h, w]; std [B, 1, 1, 1] -> [B, h, w]. Channel mean, as for log-likelihoods.
    The trainer adds ``train.kl_coef * mean_{b,ij} KL`` to the loss of every trained transition.
    """
    return ((mean - ref_mean.detach()) ** 2 / (2 * std**2)).mean(dim=1)


def kl_held_pixels(region: str, holds: torch.Tensor | None, weights: torch.Tensor | None) -> torch.Tensor | None:
    """Per-sample pixels the KL anchors, for the per-sample ``train.kl_region`` settings; [N, h, w] or None
    (the fixed region, or every pixel when the reward says nothing to go by).

        hold      h_ij                     what the reward asks to keep
        unasked   max(h_ij, 1 - w_ij)      and every pixel it has no opinion on (weight w below 1);
                                           a sample with no such pixel is anchored everywhere
    """
    if region == "hold":
        return holds
    if region != "unasked" or (holds is None and weights is None):
        return None
    held = _unasked(holds, weights)
    nothing = held.flatten(1).amax(dim=1) <= 0  # [N] an opinion on every pixel and nothing kept: a two-sided map
    return torch.where(nothing.view(-1, 1, 1), torch.ones_like(held), held)


def _unasked(holds: torch.Tensor | None, weights: torch.Tensor | None) -> torch.Tensor:
    """max(h_ij, 1 - w_ij) per sample, before any fallback; one of the two given."""
    unasked = 1 - weights if weights is not None else torch.zeros_like(holds)
    return unasked if holds is None else torch.maximum(holds, unasked)


def anchors_everything(region: str, holds: torch.Tensor | None, weights: torch.Tensor | None) -> bool:
    """Whether ``kl_held_pixels`` falls back to every pixel for some sample (the reward keeps nothing and
    has an opinion everywhere), which the trainer says once."""
    if region == "hold":
        return holds is None
    if region != "unasked":
        return False
    if holds is None and weights is None:
        return True
    return bool((_unasked(holds, weights).flatten(1).amax(dim=1) <= 0).any())


def adapt_kl_coef(coef: float, kl: float, target: float, rate: float = 0.2, rate_up: float | None = None) -> float:
    """Adaptive KL weight (as in RL from human feedback, Ziegler et al. 2019): after each update the weight
    moves by at most ``rate`` down or ``rate_up`` (default: ``rate``) up, toward the value that holds the
    mean KL per anchored pixel at ``target``:

        coef <- coef * (1 + clip(kl / target - 1, -rate, rate_up))

    A task whose reward hardly moves the anchored pixels loosens its anchor; one that drags them tightens it.
    """
    if target <= 0 or not math.isfinite(kl):  # also the first update of a relative target: nothing moved yet
        return coef
    return coef * (1 + min(max(kl / target - 1, -rate), rate if rate_up is None else rate_up))


def relative_kl_target(kl_asked: float, ratio: float, fallback: float) -> float:
    """``experimental.kl_target_ratio``: the adaptive KL's target for the next update, a share of the mean KL per asked
    pixel (the policy's divergence where the reward wants change):

        target = ratio * KL_asked        (fallback where no pixel is asked: KL_asked is nan)

    Holding KL_held / KL_asked near ``ratio`` asks the anchored pixels' steps to move about sqrt(ratio) as
    much as the asked ones, a locality that does not depend on how fast the task moves.
    """
    if ratio <= 0 or not math.isfinite(kl_asked):
        return fallback
    return ratio * kl_asked


OBJECTIVES = {
    ("ddpo", "sf"): ddpo_sf,
    ("ddpo", "clipped"): ddpo_clipped,
    ("pxpo", "sf"): pxpo_sf,
    ("pxpo", "clipped"): pxpo_clipped,
}


CREDITS = ("pixel", "detached", "mask")  # train.credit: the three per-pixel designs


def default_clip_range(
    algorithm: str, latent_hw: tuple[int, int], ddpo_clip: float = 1e-4, credit: str = "pixel"
) -> float:
    """DDPO's 1e-4 for whole-image ratios (DDPO, the detached ratio); scaled by sqrt(h*w) for per-pixel ratios."""
    if algorithm == "pxpo" and credit != "detached":
        return ddpo_clip * (latent_hw[0] * latent_hw[1]) ** 0.5
    return ddpo_clip


def objective(algorithm: str, kind: str, credit: str = "pixel"):
    """The loss function for ``algorithm`` in {ddpo, pxpo} and ``kind`` in {sf, clipped}; PXPO's
    ``credit``: pixel (per-pixel ratios), detached (the image's ratio, pxpo_detached) or mask (per-pixel
    ratios on masked_advantages). The score function has no ratio, so every credit takes pxpo_sf."""
    if algorithm == "pxpo" and kind == "clipped" and credit == "detached":
        return pxpo_detached
    try:
        return OBJECTIVES[(algorithm, kind)]
    except KeyError:
        raise ValueError(
            f"unknown objective {algorithm}/{kind}: algorithm is 'ddpo' or 'pxpo', kind is 'sf' or 'clipped'"
        ) from None
