"""The `vlm-agent` command: help for every subcommand, config files, clear errors."""

from __future__ import annotations

import pytest

from vlm_agent.cli.main import COMMANDS, DEFAULT_TRAIN_CONFIG, embedded_config_path, environment_report, main
from vlm_agent.training.ppo_config import VLMPPOConfig


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse exits on --help and on errors
        return int(exit_.code or 0)


def test_top_level_help_lists_commands(capsys) -> None:
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out
    assert run([]) == 2


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help(command: str, capsys) -> None:
    assert run([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"vlm-agent {command}" in out
    if command != "env":
        assert "--config" in out


def test_train_help_documents_fields(capsys) -> None:
    run(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--cot_scale" in out and "sum log p(CoT tokens)" in out
    assert "--gae_lambda" in out and "GAE lambda" in out


def test_bad_values_and_config_files_give_clear_errors(tmp_path, capsys) -> None:
    assert run(["train", "--model_name_or_path", "m", "--gamma", "2"]) == 2
    assert "VLMPPOConfig.gamma=2.0 must lie in [0, 1]; set --gamma between 0 and 1" in capsys.readouterr().err

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("env_id: gym_cards/NumberLine-v0\nlearning_rat: 0.1\n")
    assert run(["train", "--config", str(unknown)]) == 2
    assert "unknown.yaml: 'learning_rat' is not an option (did you mean learning_rate?)" in capsys.readouterr().err

    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: m\nclip_range: -0.1\n")
    assert run(["train", "--config", str(bad)]) == 2
    assert "VLMPPOConfig.clip_range=-0.1 must be a positive finite number" in capsys.readouterr().err

    assert run(["sft", "--wrong_action_rate", "3"]) == 2
    assert "wrong_action_rate=3.0 must lie in [0, 1]" in capsys.readouterr().err


def test_shipped_configs_parse() -> None:
    from trl import TrlParser

    for name in (DEFAULT_TRAIN_CONFIG, "tiny_numberline_text_cpu.yaml", "paper_card_games.yaml"):
        (config,) = TrlParser(VLMPPOConfig).parse_args_and_config(["--config", str(embedded_config_path(name))])
        assert config.env_id == "gym_cards/NumberLine-v0"
    (paper,) = TrlParser(VLMPPOConfig).parse_args_and_config(
        ["--config", str(embedded_config_path("paper_card_games.yaml")), "--seed", "7"]
    )
    assert (paper.seed, paper.gradient_accumulation_steps, paper.lora_r) == (7, 128, 128)


def test_env_report_names_versions(capsys) -> None:
    assert run(["env"]) == 0
    out = capsys.readouterr().out
    assert "torch: " in out and "trl: " in out and "python: " in out
    assert environment_report().splitlines()[0].startswith("platform: ")


def test_eval_with_the_expert_writes_results(tmp_path, capsys) -> None:
    code = run(["eval", "--methods", "expert", "--episodes", "4", "--out_dir", str(tmp_path), "--no_progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "expert" in out and "NumberLine" in out
    assert list(tmp_path.glob("evaluation.*"))


def test_make_tiny_model(tmp_path, torch_single_thread, capsys) -> None:
    assert run(["make-tiny-model", "--out_dir", str(tmp_path / "m"), "--arch", "qwen2_vl"]) == 0
    assert (tmp_path / "m" / "config.json").is_file()
    assert "random parameters) to" in capsys.readouterr().out
    # The spelling: the output folder as a plain last argument.
    assert run(["make-tiny-model", "--arch", "qwen2_vl", "--num_layers", "1", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "config.json").is_file()


def test_train_without_a_model_builds_warm_starts_and_trains_the_tiny_model(tmp_path, torch_single_thread, capsys) -> None:
    """The README's main command, shrunk: embedded config, tiny model aligned to read the image, SFT
    warm start, image-only PPO, outputs, the held-out before/after comparison with its blank-image
    control, and `vlm-agent eval` on the run folder with its own settings."""
    import csv
    import json

    run_dir = tmp_path / "demo"
    code = run([
        "train", "--output_dir", str(run_dir), "--sft_num_demos", "16", "--sft_epochs", "1", "--num_envs", "4",
        "--num_steps", "2", "--total_timesteps", "16", "--mini_batch_size", "4", "--max_new_tokens", "16",
        "--final_eval_episodes", "4", "--no_progress_bar",
        "--align_projector_steps", "2", "--align_language_steps", "2", "--align_num_examples", "32",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert f"Run written to {run_dir}" in out
    for name in ("metrics.jsonl", "metrics.csv", "samples.jsonl", "learning_curve.png", "config.json",
                 "held_out_comparison.md", "held_out_comparison.csv"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "base_model" / "WARM_START_DONE").is_file()
    assert (run_dir / "aligned_model" / "align_summary.json").is_file()
    assert (run_dir / "policy" / "policy_settings.json").is_file()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    # The policy and the warm start carry the demo's settings (image only, 16 tokens, penalty rule).
    for folder in ("policy", "base_model"):
        saved = json.loads((run_dir / folder / "agent_settings.json").read_text())
        assert (saved["show_state"], saved["max_new_tokens"], saved["invalid_action"]) == (False, 16, "penalty")
    # The comparison: printed, and written with one row per reference, each with its settings.
    table = out[out.index("Held-out success on gym_cards/NumberLine-v0 (4 episodes each):"):]
    rows_shown = ["random", "warm start", "trained", "trained (blank image)", "trained (other-state image)", "expert"]
    for row in rows_shown:
        assert f"  {row} " in table
    rows = {row["method"]: row for row in csv.DictReader((run_dir / "held_out_comparison.csv").open())}
    assert list(rows) == rows_shown
    assert float(rows["expert"]["success_rate"]) == 1.0
    assert rows["trained"]["show_state"] == "False" and rows["trained"]["invalid_action"] == "penalty"
    assert rows["warm start"]["show_state"] == "False" and rows["trained (blank image)"]["show_state"] == "False"
    assert int(rows["trained"]["completion_tokens"]) <= 16 * int(rows["trained"]["steps"])
    capsys.readouterr()
    # `local:` accepts the run folder (its policy/) and plays it as trained, without prompt flags.
    code = run(["eval", "--methods", f"local:{run_dir}", f"blank:local:{run_dir}", "--episodes", "2",
                "--num_envs", "2", "--out_dir", str(tmp_path / "eval"), "--no_progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| local:demo |" in out and "| blank:local:demo |" in out
    evaluated = list(csv.DictReader((tmp_path / "eval" / "evaluation.csv").open()))
    assert [row["method"] for row in evaluated] == ["local:demo", "blank:local:demo"]
    assert all(row["show_state"] == "False" and row["invalid_action"] == "penalty" for row in evaluated)
    # A flag overrides the saved setting.
    code = run(["eval", "--methods", f"local:{run_dir}", "--episodes", "1", "--num_envs", "1", "--show_state",
                "true", "--out_dir", str(tmp_path / "eval2"), "--no_progress"])
    assert code == 0
    (row,) = csv.DictReader((tmp_path / "eval2" / "evaluation.csv").open())
    assert row["show_state"] == "True"


def test_train_help_says_a_bare_train_runs_the_demo(capsys) -> None:
    run(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    head = out[: out.index("options:")]  # usage, then the description, before any option
    assert "A bare `vlm-agent train`" in head and DEFAULT_TRAIN_CONFIG in head and "paper's" in head


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--env_id", "gym_cards/NumberLin-v0"], "did you mean 'gym_cards/NumberLine-v0'"),
        (["train", "--env_id", "NumberLine-v0"], "did you mean 'gym_cards/NumberLine-v0'"),
        (["sft", "--env_id", "gym_cards/Chess-v0"], "unknown environment id 'gym_cards/Chess-v0'"),
        (["eval", "--env_ids", "NumberLine-v0"], "did you mean 'gym_cards/NumberLine-v0'"),
        (["eval", "--methods", "claude"], "unknown method 'claude'"),
        (["eval", "--methods", "local:/no/such/folder"], "is not a folder"),
    ],
)
def test_user_errors_are_one_line_without_building_anything(argv, message, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # a run folder or results would land here
    assert run(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # argparse may print its usage first
    assert message in last and last.startswith(f"vlm-agent {argv[0]}: error: ")
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir())  # no run folder, no tiny model, no results


def test_eval_options_include_api_settings(capsys) -> None:
    run(["eval", "--help"])
    out = capsys.readouterr().out
    for option in ("--concurrency", "--timeout_s", "--max_retries", "--num_envs", "--invalid_action"):
        assert option in out


def test_bare_train_on_another_env_uses_the_text_state_demo(capsys) -> None:
    """The image-only demo reads NumberLine alone: on another env the bare command says it gives the state as text."""
    assert run(["train", "--env_id=gym_cards/Blackjack-v0", "--total_timesteps", "-1"]) == 2
    captured = capsys.readouterr()
    assert "tiny_numberline_text_cpu.yaml" in captured.out and "total_timesteps" in captured.err
    assert run(["train", "--total_timesteps", "-1"]) == 2
    assert "tiny_numberline_text_cpu.yaml" not in capsys.readouterr().out
