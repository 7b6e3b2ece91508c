"""The typed config tree: YAML, --key=value overrides, type checks, and --help."""
import pytest

from pxpo.config import ConfigError, help_lines, load_yaml, parse_overrides, save_yaml
from pxpo.training.config import RunConfig


def test_overrides_are_typed_and_nested(tmp_path):
    cfg = parse_overrides(RunConfig(), ["--epochs=3", "--train.lr=2e-5", "--train.algorithm=ddpo",
                                        "--reward.params={target: blue, region: top}",
                                        "--model.lora_targets=[to_q, to_v]", "--tensorboard=false"],
                          prog="t", description="")
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


@pytest.mark.parametrize("arg, message", [
    ("--epochs=many", "expected an integer"),
    ("--train.lr=fast", "expected a number"),
    ("--train.nope=1", "unknown option 'train.nope': train has"),
    ("--tensorboard=maybe", "expected true or false"),
    ("--train=1", "is a section"),
    ("epochs=3", "write options as --key=value"),
])
def test_bad_values_get_clear_messages(arg, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides(RunConfig(), [arg], prog="pxpo train", description="")


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="does not exist"):
        parse_overrides(RunConfig(), ["--config=/no/such.yaml"], prog="t", description="")


def test_help_lists_every_field():
    text = "\n".join(help_lines(RunConfig()))
    for key in ("--model.name", "--train.clip_range", "--reward.latent_pool", "--sample.eta", "--epochs",
                "--prompts.negative", "--train.timestep_fraction", "--model.finetune"):
        assert key in text


def test_naming_another_reward_drops_the_default_rewards_params(tmp_path):
    cfg = parse_overrides(RunConfig(), ["--reward.name=segment-grow"], prog="t", description="")
    assert cfg.reward.params == {}
    path = tmp_path / "c.yaml"
    path.write_text("reward:\n  name: segment-grow\n")
    assert parse_overrides(RunConfig(), [f"--config={path}"], prog="t", description="").reward.params == {}
    kept = parse_overrides(RunConfig(), ["--reward.name=colour", "--reward.params={target: blue}"],
                           prog="t", description="")
    assert kept.reward.params == {"target": "blue"}
    assert RunConfig().reward.params == {"target": "blue", "region": "background", "outside": "keep"}  # untouched default


@pytest.mark.parametrize("arg, message", [
    ("--train.step_weight=sigma", "train.step_weight='sigma': use 'none' or 'balanced'"),
    ("--train.timestep_order=last", "use 'random' or 'first'"),
])
def test_bad_training_choices_are_refused_before_the_model_loads(arg, message):
    from pxpo.training.validate import validate_config

    cfg = parse_overrides(RunConfig(), [arg], prog="pxpo train", description="")
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)
