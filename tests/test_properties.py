"""Property tests (hypothesis): the reward-map boundary, config overrides, and the DDIM log-prob on
random schedules, timesteps and eta. Few examples each, so the file stays fast on a CPU."""

import math

import pytest
import torch
from diffusers import DDIMScheduler
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pxpo.config import ConfigError, load_yaml, parse_overrides, save_yaml
from pxpo.rewards.base import RewardError, RewardResult, validate
from pxpo.rewards.compose import Validated
from pxpo.backends.ddim import ddim_step_with_logprob
from pxpo.training.config import RunConfig

FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
]


# ---- the reward boundary ---------------------------------------------------------------------
@st.composite
def reward_outputs(draw):
    """A batch of images and what a reward might return for it: right or wrong shape, any dtype,
    values with or without NaN/inf, as a RewardResult or a bare tensor."""
    b, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    images = torch.rand(b, 3, h, w)
    kind = draw(st.sampled_from(["map", "scalar", "both", "bare-map", "bare-scalar"]))
    dtype = draw(st.sampled_from(DTYPES))
    wrong = draw(st.sampled_from([None, "batch", "height", "extra-dim"]))
    bad_value = draw(st.sampled_from([None, float("nan"), float("inf"), -float("inf")]))

    def tensor(shape):
        shape = list(shape)
        if wrong == "batch":
            shape[0] += 1
        elif wrong == "height" and len(shape) == 3:
            shape[1] += 1
        elif wrong == "extra-dim":
            shape.append(2)
        t = torch.rand(shape) * 4 - 2
        if bad_value is not None and t.numel():
            t.view(-1)[0] = bad_value
        return t.to(dtype)

    maps = tensor((b, h, w)) if kind in ("map", "both", "bare-map") else None
    scalar = tensor((b,)) if kind in ("scalar", "both", "bare-scalar") else None
    shapes_ok = wrong is None or (wrong == "height" and maps is None)
    finite_ok = bad_value is None or not dtype.is_floating_point  # NaN/inf cast to ints are just numbers
    ok = shapes_ok and dtype.is_floating_point and finite_ok
    return images, kind, maps, scalar, ok


@FEW
@given(reward_outputs())
def test_reward_boundary_accepts_exactly_the_valid_outputs(case):
    images, kind, maps, scalar, ok = case

    def reward(imgs, prompts, metadata):
        if kind == "bare-map":
            return maps
        if kind == "bare-scalar":
            return scalar
        return RewardResult(map=maps, scalar=scalar)

    wrapped = Validated(reward, "my:reward")
    try:
        result = wrapped(images, [""] * len(images), [{}] * len(images))
    except RewardError as e:  # never another exception type, and always naming the reward
        assert not ok, f"a valid output was refused: {e}"
        assert "'my:reward'" in str(e)
        return
    assert ok, "an invalid output passed"
    b, _, h, w = images.shape
    assert result.scalar.shape == (b,) and torch.isfinite(result.scalar.float()).all()
    if result.map is not None:
        assert result.map.shape == (b, h, w) and result.map.is_floating_point()


@FEW
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5))
def test_a_maps_scalar_is_its_mean(b, h, w):
    m = torch.rand(b, h, w)
    result = validate(RewardResult(map=m), "r", torch.rand(b, 3, h, w))
    assert torch.allclose(result.scalar, m.mean(dim=(1, 2)))


# ---- config overrides ------------------------------------------------------------------------
INT_FIELDS = ["epochs", "seed", "sample.num_steps", "sample.batch_size", "train.batch_size", "eval_samples"]
FLOAT_FIELDS = ["train.lr", "train.clip_range", "sample.eta", "sample.guidance", "train.kl_coef"]
BOOL_FIELDS = ["tensorboard", "train.cfg", "model.allow_download"]


def get(cfg, dotted):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@FEW
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from(INT_FIELDS), st.integers(-(10**6), 10**6)),
            st.tuples(st.sampled_from(FLOAT_FIELDS), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)),
            st.tuples(st.sampled_from(BOOL_FIELDS), st.booleans()),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_overrides_set_typed_values_and_survive_a_yaml_round_trip(tmp_path_factory, pairs):
    argv = [f"--{k}={str(v).lower() if isinstance(v, bool) else repr(v)}" for k, v in pairs]
    cfg = parse_overrides(RunConfig(), argv, prog="t", description="")
    last = dict(pairs)  # the last value given for a key wins
    for key, value in last.items():
        got = get(cfg, key)
        assert got == value and type(got) is type(value), (key, value, got)
    path = save_yaml(cfg, tmp_path_factory.mktemp("yaml") / "c.yaml")
    assert load_yaml(RunConfig(), path) == cfg


@FEW
@given(st.sampled_from(INT_FIELDS + FLOAT_FIELDS + BOOL_FIELDS), st.text(max_size=12))
def test_any_text_for_a_typed_option_is_read_or_refused_with_a_config_error(key, text):
    assume("\x00" not in text)
    try:
        cfg = parse_overrides(RunConfig(), [f"--{key}={text}"], prog="t", description="")
    except ConfigError as e:
        assert key in str(e)
        return
    value = get(cfg, key)
    default = get(RunConfig(), key)
    assert type(value) is type(default)


def option_keys(cfg, prefix=""):
    import dataclasses

    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        yield prefix + f.name
        if dataclasses.is_dataclass(value):
            yield from option_keys(value, prefix + f.name + ".")


@FEW
@given(
    st.one_of(
        st.from_regex(r"[a-z_]{1,8}(\.[a-z_]{1,8}){0,2}", fullmatch=True),
        st.sampled_from(sorted(option_keys(RunConfig()))),
    ).map(lambda k: k + "x" if k == "config" else k)
)
def test_unknown_keys_are_refused_naming_the_choices(key):
    known = set(option_keys(RunConfig()))
    try:
        parse_overrides(RunConfig(), [f"--{key}=1"], prog="t", description="")
    except ConfigError as e:
        if key in known:  # a known option may refuse the value 1, but says which option
            assert key in str(e)
        else:
            assert f"unknown option {key!r}" in str(e) or "is not a section" in str(e)
        return
    assert key in known, f"unknown option {key!r} was accepted"


# ---- the DDIM policy's log-probability -------------------------------------------------------
@st.composite
def ddim_cases(draw):
    train_t = draw(st.sampled_from([100, 1000]))
    cfg = dict(
        num_train_timesteps=train_t,
        beta_schedule=draw(st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"])),
        beta_start=draw(st.floats(1e-4, 2e-3)),
        beta_end=draw(st.floats(5e-3, 3e-2)),
        prediction_type=draw(st.sampled_from(["epsilon", "v_prediction", "sample"])),
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    steps = draw(st.integers(2, min(50, train_t // 2)))
    b = draw(st.integers(1, 3))
    index = draw(st.lists(st.integers(0, steps - 1), min_size=b, max_size=b))
    eta = draw(st.floats(0.05, 1.0))
    seed = draw(st.integers(0, 2**16))
    return cfg, steps, index, eta, seed


@FEW
@given(ddim_cases())
def test_ddim_log_prob_is_the_gaussian_of_diffusers_step(case):
    cfg, steps, index, eta, seed = case
    s = DDIMScheduler(**cfg)
    s.set_timesteps(steps)
    # the schedule in float64 on both sides: diffusers takes square roots of float32 scalars, whose
    # rounding (1e-7 relative) the density would blow up by 1/std at small steps
    s.alphas_cumprod = s.alphas_cumprod.double()
    s.final_alpha_cumprod = torch.as_tensor(s.final_alpha_cumprod).double()
    g = torch.Generator().manual_seed(seed)
    b = len(index)
    x, out = (torch.randn(b, 4, 4, 4, generator=g, dtype=torch.float64) for _ in range(2))
    ts = s.timesteps[index]
    means, stds = [], []
    for i, t in enumerate(ts):  # diffusers, one sample at a time: the mean (no noise) and eta * sigma_t
        means.append(
            s.step(out[i : i + 1], t, x[i : i + 1], eta=eta, variance_noise=torch.zeros_like(x[i : i + 1])).prev_sample
        )
        prev_t = t - s.config.num_train_timesteps // s.num_inference_steps
        stds.append(eta * float(s._get_variance(t, prev_t)) ** 0.5)
    mean = torch.cat(means)
    std = torch.tensor(stds, dtype=torch.float64).view(b, 1, 1, 1)
    assume(bool(torch.isfinite(mean).all()) and bool((std > 0).all()))
    given_x = mean + std * torch.randn(x.shape, generator=g, dtype=torch.float64)
    prev, lp = ddim_step_with_logprob(s, out, ts, x, eta=eta, prev_sample=given_x)
    ref = torch.distributions.Normal(mean, std.expand_as(mean)).log_prob(given_x)
    assert torch.equal(prev, given_x) and lp.shape == x.shape and torch.isfinite(lp).all()
    assert torch.allclose(lp, ref, rtol=1e-9, atol=1e-9)
    # drawn steps are Gaussian around the same mean: z = (x' - mu) / std has the density's own log-prob
    drawn, lp_drawn = ddim_step_with_logprob(s, out, ts, x, eta=eta, generator=g)
    z = (drawn - mean) / std
    assert torch.allclose(lp_drawn, -0.5 * z**2 - torch.log(std) - 0.5 * math.log(2 * math.pi), rtol=1e-9, atol=1e-9)


@FEW
@given(st.floats(-1.0, 0.0))
def test_ddim_refuses_eta_without_a_density(eta):
    s = DDIMScheduler(set_alpha_to_one=False, steps_offset=1)
    s.set_timesteps(5)
    with pytest.raises(ValueError, match="eta must be > 0"):
        ddim_step_with_logprob(s, torch.zeros(1, 4, 2, 2), s.timesteps[0], torch.zeros(1, 4, 2, 2), eta=eta)
