"""`--env_kwargs` on train / sft / eval: parsed from JSON or YAML, checked before any model is built."""

from __future__ import annotations

import json

import pytest

from vlm_agent.cli.main import embedded_config_path, main
from vlm_agent.rollout.environments import EnvKwargs, check_env, observation_image, parse_env_kwargs
from vlm_agent.training.ppo_config import VLMPPOConfig
from vlm_agent.training.sft import VLMSFTConfig

import numpy as np


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"split": "eval", "task_types": ["pick"]}', {"split": "eval", "task_types": ["pick"]}),
        ("max_position: 8", {"max_position": 8}),
        ("{treat_face_cards_as_10: false}", {"treat_face_cards_as_10": False}),
        ("", {}),
        (None, {}),
        ({"data_path": "games"}, {"data_path": "games"}),
    ],
)
def test_env_kwargs_parse_json_yaml_and_mappings(text, expected) -> None:
    assert parse_env_kwargs(text) == expected
    assert VLMPPOConfig(env_kwargs=text).env_kwargs == expected
    assert VLMSFTConfig(env_kwargs=text).env_kwargs == expected


@pytest.mark.parametrize("text", ["[1, 2]", "just text", "{a: [1, 2}", '{"1x": 3}'])
def test_env_kwargs_that_are_not_a_mapping_of_names_are_refused(text) -> None:
    with pytest.raises(ValueError, match="env_kwargs"):
        VLMPPOConfig(env_kwargs=text)


def test_the_config_keeps_env_kwargs_as_json_data() -> None:
    config = VLMPPOConfig(env_kwargs='{"max_position": 8}')
    assert isinstance(config.env_kwargs, EnvKwargs) and isinstance(config.env_kwargs, dict)
    assert json.loads(json.dumps(config.to_dict()))["env_kwargs"] == {"max_position": 8}
    assert VLMPPOConfig(**config.to_dict()).env_kwargs == {"max_position": 8}


def test_check_env_names_unknown_ids_and_options() -> None:
    check_env("gym_cards/NumberLine-v0", {"max_position": 8})
    check_env("gym_cards/Points24-v0", {"treat_face_cards_as_10": False, "max_episode_steps": 10})
    check_env("gym_cards/ALFWorld-v0", {"split": "eval", "task_types": ["pick"], "data_path": None})
    with pytest.raises(ValueError, match=r"unknown environment id 'gym_cards/Nope-v0'.*known gym_cards ids: .*NumberLine"):
        check_env("gym_cards/Nope-v0")
    with pytest.raises(ValueError, match=r"\['splitt'\] are not accepted by gym_cards/ALFWorld-v0; its options are .*'split'"):
        check_env("gym_cards/ALFWorld-v0", {"splitt": "eval"})


def test_a_bad_env_option_fails_before_any_model_is_built(tmp_path) -> None:
    from vlm_agent.demo.warm_start import train_demo
    from vlm_agent.training.ppo_trainer import VLMPPOTrainer

    # The model path does not exist: reaching the model would raise a different error.
    config = VLMPPOConfig(model_name_or_path=str(tmp_path / "no_model"), device="cpu", env_kwargs={"bogus": 1})
    with pytest.raises(ValueError, match=r"\['bogus'\] are not accepted by gym_cards/NumberLine-v0"):
        VLMPPOTrainer(config)
    with pytest.raises(ValueError, match=r"\['bogus'\] are not accepted"):
        train_demo(VLMPPOConfig(device="cpu", env_kwargs={"bogus": 1}, output_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()  # no warm start began


def exit_code(argv: list[str]) -> int:
    """The exit status of `vlm-agent argv` (argparse errors exit through SystemExit)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


@pytest.mark.parametrize("command", ["train", "sft", "eval"])
def test_cli_env_errors_are_one_line_and_exit_2(command, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    env_flag = "--env_ids" if command == "eval" else "--env_id"
    assert exit_code([command, env_flag, "gym_cards/ALFWorld-v0", "--env_kwargs", '{"splitt": "eval"}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith(f"vlm-agent {command}: error: env_kwargs option(s) ['splitt']")
    assert exit_code([command, env_flag, "gym_cards/Nope-v0"]) == 2
    assert "unknown environment id 'gym_cards/Nope-v0'" in capsys.readouterr().err
    assert exit_code([command, "--env_kwargs", "[1, 2]"]) == 2
    assert "env_kwargs must be a mapping" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_paper_alfworld_config_parses() -> None:
    from trl import TrlParser

    (config,) = TrlParser(VLMPPOConfig).parse_args_and_config(
        ["--config", str(embedded_config_path("paper_alfworld.yaml")), "--env_kwargs", "{split: train, task_types: [pick]}"]
    )
    assert config.env_id == "gym_cards/ALFWorld-v0"
    assert (config.cot_scale, config.invalid_action, config.history_steps) == (0.2, "nothing", 2)
    assert (config.num_steps, config.gradient_accumulation_steps, config.total_timesteps) == (1024, 256, 12000)
    assert config.env_kwargs == {"split": "train", "task_types": ["pick"]}
    check_env(config.env_id, config.env_kwargs)


def test_observation_images_from_arrays_and_mappings() -> None:
    image = np.zeros((4, 5, 3), dtype=np.uint8)
    assert observation_image(image) is not None and observation_image(image).shape == (4, 5, 3)
    assert observation_image({"image": image, "text": "hi", "admissible_commands": "look"}).shape == (4, 5, 3)
    with pytest.raises(TypeError, match="needs an 'image' entry"):
        observation_image({"text": "no image"})
    with pytest.raises(TypeError, match="not an image"):
        observation_image(np.asarray([{"image": image}], dtype=object))
