"""The typed config tree: YAML, --key=value overrides, type checks, and --help."""

import pytest

from pxpo.config import ConfigError, help_text, load_yaml, parse_overrides, save_yaml
from pxpo.training.config import RunConfig


def test_overrides_are_typed_and_nested(tmp_path):
    cfg = parse_overrides(
        RunConfig(),
        [
            "--epochs=3",
            "--train.lr=2e-5",
            "--train.algorithm=ddpo",
            "--reward.params={target: blue, region: top}",
            "--model.lora_targets=[to_q, to_v]",
            "--tensorboard=false",
        ],
        prog="t",
        description="",
    )
    assert cfg.epochs == 3 and cfg.train.lr == 2e-5 and cfg.train.algorithm == "ddpo"
    assert cfg.reward.params == {"target": "blue", "region": "top"}
    assert cfg.model.lora_targets == ["to_q", "to_v"] and cfg.tensorboard is False


def test_yaml_round_trip_and_file_then_overrides(tmp_path):
    cfg = RunConfig()
    cfg.sample.num_steps = 7
    path = save_yaml(cfg, tmp_path / "c.yaml")
    loaded = load_yaml(RunConfig(), path)
    assert loaded == cfg
    again = parse_overrides(RunConfig(), [f"--config={path}", "--sample.num_steps=9"], prog="t", description="")
    assert again.sample.num_steps == 9


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--epochs=many", "expected an integer"),
        ("--train.lr=fast", "expected a number"),
        ("--train.nope=1", "unknown option 'train.nope': train has"),
        ("--tensorboard=maybe", "expected true or false"),
        ("--train=1", "is a section"),
        ("epochs=3", "write options as --key=value"),
    ],
)
def test_bad_values_get_clear_messages(arg, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides(RunConfig(), [arg], prog="pxpo train", description="")


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="does not exist"):
        parse_overrides(RunConfig(), ["--config=/no/such.yaml"], prog="t", description="")


def test_help_lists_every_field_with_its_type_choices_and_default():
    from pxpo.config_schema import schema

    text = help_text(RunConfig, "pxpo train", "")
    for key in schema(RunConfig)[0]:
        assert f"--{key} " in text, key
    assert "--train.algorithm {pxpo,ddpo}" in text and "type: Literal['pxpo', 'ddpo'], default: pxpo" in " ".join(
        text.split()
    )
    assert "type: float, default: 0.0002" in " ".join(text.split())  # train.lr
    assert "--experimental.step_weight {none,balanced}" in text


def test_help_lines_carry_no_measurements():
    """The help is one line per option; why a default was chosen (with what was measured) is in the
    field's docstring after its first paragraph, and in docs/recipe.md."""
    import re

    text = help_text(RunConfig, "pxpo train", "")
    assert not re.search(r"[+-]0\.\d{3}|finding \d+", text)


def test_naming_another_reward_drops_the_default_rewards_params(tmp_path):
    cfg = parse_overrides(RunConfig(), ["--reward.name=segment-grow"], prog="t", description="")
    assert cfg.reward.params == {}
    path = tmp_path / "c.yaml"
    path.write_text("reward:\n  name: segment-grow\n")
    assert parse_overrides(RunConfig(), [f"--config={path}"], prog="t", description="").reward.params == {}
    kept = parse_overrides(
        RunConfig(), ["--reward.name=colour", "--reward.params={target: blue}"], prog="t", description=""
    )
    assert kept.reward.params == {"target": "blue"}
    assert RunConfig().reward.params == {
        "target": "blue",
        "region": "background",
        "outside": "keep",
    }  # untouched default


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--experimental.step_weight=sigma", "experimental.step_weight='sigma': use one of none, balanced"),
        ("--train.timestep_order=middle", "train.timestep_order='middle': use one of first, last, random"),
        ("--experimental.adv_norm=pixel", "experimental.adv_norm='pixel': use one of pixel-std, null"),
    ],
)
def test_bad_choices_are_refused_as_they_are_read(arg, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides(RunConfig(), [arg], prog="pxpo train", description="")


def test_choices_of_a_config_built_in_python_are_checked_before_the_model_loads():
    from pxpo.training.validate import validate_config

    cfg = RunConfig()
    cfg.experimental.step_weight = "sigma"
    with pytest.raises(ConfigError, match="experimental.step_weight='sigma': use one of none, balanced"):
        validate_config(cfg)
    cfg = RunConfig()
    cfg.experimental.adv_norm, cfg.train.adv_norm = "pixel-std", "global"
    with pytest.raises(ConfigError, match="replaces train.adv_norm=pixel"):
        validate_config(cfg)


def test_the_experimental_variants_moved_and_old_run_configs_still_load(tmp_path):
    with pytest.raises(ConfigError, match="train.step_weight is now experimental.step_weight"):
        parse_overrides(RunConfig(), ["--train.step_weight=balanced"], prog="t", description="")
    old = tmp_path / "config.yaml"  # a run's config.yaml from before the experimental section
    old.write_text(
        "reward:\n  hold_pool: max\ntrain:\n  step_weight: balanced\n  part_scale: apart\n"
        "  group_scale: group\n  adv_norm: pixel-std\n  lr: 1.0e-4\n"
    )
    cfg = load_yaml(RunConfig(), old)
    x = cfg.experimental
    assert (x.step_weight, x.part_scale, x.group_scale, x.hold_pool, x.adv_norm) == (
        "balanced",
        "apart",
        "group",
        "max",
        "pixel-std",
    )
    assert cfg.train.adv_norm == "pixel" and cfg.train.lr == 1e-4
    assert parse_overrides(RunConfig(), [f"--config={old}"], prog="t", description="").experimental == x


def test_print_config_prints_what_config_yaml_would_hold(capsys):
    import yaml

    with pytest.raises(SystemExit) as e:
        parse_overrides(RunConfig(), ["--train.lr=1e-3", "--print_config"], prog="t", description="")
    assert e.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = RunConfig()
    expected.train.lr = 1e-3
    assert printed == yaml.safe_load(yaml.safe_dump(__import__("dataclasses").asdict(expected)))


def test_list_options_take_one_item_and_sections_take_a_mapping():
    cfg = parse_overrides(
        RunConfig(), ["--model.lora_targets=to_q", "--train={lr: 1.0e-3, batch_size: 8}"], prog="t", description=""
    )
    assert cfg.model.lora_targets == ["to_q"] and (cfg.train.lr, cfg.train.batch_size) == (1e-3, 8)


def test_a_mapping_option_reads_compact_yaml_and_names_a_missing_space():
    cfg = parse_overrides(
        RunConfig(),
        ["--reward.name=scene-parts", "--reward.params={parts:[[sky,blue]],outside: keep}"],
        prog="t",
        description="",
    )
    assert cfg.reward.params == {"parts": [["sky", "blue"]], "outside": "keep"}
    cfg = parse_overrides(RunConfig(), ["--reward.params={target: blue, region: top}"], prog="t", description="")
    assert list(cfg.reward.params) == ["target", "region"]  # the order as written
    with pytest.raises(ConfigError, match=r"space after the colon: \{target: blue\}"):
        parse_overrides(RunConfig(), ["--reward.params={target:blue}"], prog="t", description="")
