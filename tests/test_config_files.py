"""`--config FILE.yaml` of train/sft/eval: read by a strict SafeLoader, type-checked, one clear line per problem."""

from __future__ import annotations

import pytest

from vlm_agent.cli.main import _parse, main
from vlm_agent.training.ppo_config import VLMPPOConfig


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("num_envs: 2.0\n", "num_envs: 2.0 is a decimal number, but num_envs takes an integer"),
        ("gamma: [0.9]\n", "gamma: [0.9] is a list, but gamma takes a number"),
        ("num_envs: true\n", "num_envs: true is true/false, but num_envs takes an integer"),
        ("env_id: 5\n", "env_id: 5 is an integer, but env_id takes text"),
        ("seed: null\n", "seed: null is null, but seed takes an integer; remove the line to keep the default 1"),
        ("report_to: 5\n", "report_to: 5 is an integer, but report_to takes text, or a list of texts"),
        ("output_dir:\n  path: runs/x\n", "output_dir: {'path': 'runs/x'} is a mapping, but output_dir takes text or null"),
        ("seed: 1\nnum_envs: 2\nseed: 2\n", ":3:1: key 'seed' is given twice (first on line 1)"),
        ("seed: [1\n", ":2:1: expected ',' or ']'"),
        ("- num_envs\n", "must be a YAML mapping of option names to values"),
        ("learning_rat: 0.1\n", "'learning_rat' is not an option (did you mean learning_rate?)"),
    ],
)
def test_bad_train_config_files_are_one_line_errors(tmp_path, capsys, yaml_text: str, message: str) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text)
    for spelling in (["--config", str(config)], [f"--config={config}"]):
        assert run(["train", *spelling, "--model_name_or_path", str(tmp_path / "no_model")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"vlm-agent train: error: {config}") and message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_python_tags_are_refused_and_never_constructed(tmp_path, capsys) -> None:
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    for text in (f'!!python/object/apply:os.system ["touch {marker}"]\n',
                 f'seed: !!python/object/apply:os.system ["touch {marker}"]\n',
                 "seed: !!python/name:os.system\n"):
        config.write_text(text)
        assert run(["train", "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert "is not allowed: a config file holds plain values" in err and err.count("\n") == 1, err
    assert not marker.exists()


def test_missing_config_file_and_missing_value(tmp_path, capsys) -> None:
    assert run(["eval", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert capsys.readouterr().err == f"vlm-agent eval: error: config file {tmp_path / 'absent.yaml'} does not exist\n"
    assert run(["sft", "--config"]) == 2
    assert "--config needs a file" in capsys.readouterr().err


def test_sft_and_eval_config_files_are_type_checked_too(tmp_path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("num_demos: 2.5\n")
    assert run(["sft", "--config", str(config)]) == 2
    assert "num_demos: 2.5 is a decimal number, but num_demos takes an integer" in capsys.readouterr().err
    config.write_text("episodes: '10'\n")
    assert run(["eval", "--config", str(config)]) == 2
    assert "episodes: '10' is text, but episodes takes an integer" in capsys.readouterr().err
    config.write_text("methods: [expert, 3]\n")
    assert run(["eval", "--config", str(config)]) == 2
    assert "methods takes a list of items that are each text" in capsys.readouterr().err


def test_config_with_equals_sign_is_used(tmp_path, capsys) -> None:
    config = tmp_path / "eval.yaml"
    config.write_text(f"methods: expert\nepisodes: 3\nout_dir: {tmp_path / 'out'}\nstem: from_file\nprogress: false\n")
    assert run(["eval", f"--config={config}"]) == 0
    assert (tmp_path / "out" / "from_file.md").is_file()


def test_lists_for_comma_separated_options_and_yaml_floats(tmp_path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "model_name_or_path: m\nlora_target_modules: [q_proj, v_proj]\nreport_to: [tensorboard]\n"
        "learning_rate: 1e-5\nmin_learning_rate: 1e-9\ngamma: 1\nclip_range_value: null\n"
    )
    parsed = _parse(VLMPPOConfig, "train", ["--config", str(config), "--seed", "4"],
                    comma_separated=VLMPPOConfig.COMMA_SEPARATED)
    assert parsed.lora_target_modules == "q_proj,v_proj" and parsed.report_targets == ["tensorboard"]
    assert (parsed.learning_rate, parsed.min_learning_rate, parsed.gamma) == (1e-5, 1e-9, 1.0)
    assert parsed.clip_range_value is None and parsed.seed == 4  # the flag overrides nothing set in the file
    assert VLMPPOConfig(lora_target_modules=["q_proj"]).lora_target_modules == "q_proj"  # type: ignore[arg-type]


def test_shipped_configs_pass_the_checks() -> None:
    from vlm_agent.cli.main import embedded_config_path
    from vlm_agent.config_files import check_options, read_config_file

    for name in ("tiny_numberline_cpu.yaml", "tiny_numberline_text_cpu.yaml", "paper_card_games.yaml"):
        path = embedded_config_path(name)
        options = check_options(read_config_file(path), VLMPPOConfig, source=str(path),
                                comma_separated=VLMPPOConfig.COMMA_SEPARATED)
        assert options["env_id"] == "gym_cards/NumberLine-v0"
    path = embedded_config_path("paper_card_games_gigpo.yaml")
    options = check_options(read_config_file(path), VLMPPOConfig, source=str(path),
                            comma_separated=VLMPPOConfig.COMMA_SEPARATED)
    config = VLMPPOConfig(**{**options, "model_name_or_path": "some/model"})
    assert (config.algorithm, config.group_size, config.critic_free) == ("gigpo", 8, True)
    assert config.num_envs % config.group_size == 0 and config.kl_coef > 0 and config.use_lora


def test_config_files_cannot_set_environment_variables(tmp_path, capsys, monkeypatch) -> None:
    """TRL's `env:` mapping would let a config file carry an API key; keys come from the environment only."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = tmp_path / "eval.yaml"
    config.write_text("env:\n  OPENAI_API_KEY: sk-from-a-file-0123456789\nmethods: [expert]\n")
    assert run(["eval", "--config", str(config)]) == 2
    assert "'env' is not an option" in capsys.readouterr().err
    import os

    assert "OPENAI_API_KEY" not in os.environ
