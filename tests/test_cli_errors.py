"""Every user error of every `vlm-agent` command is one `vlm-agent <command>: error: ...` line and a
non-zero exit, without a traceback and without building or writing anything: unknown options (with
the closest known one), a missing model folder, a damaged one, a hub id while the hub is offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vlm_agent.cli.main import main

pytest.importorskip("torch")


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def one_error_line(err: str, command: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"vlm-agent {command}: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["train", "--totl_timesteps", "5"], "unknown option --totl_timesteps; did you mean --total_timesteps?"),
        (["train", "--model_name_or_path", "m", "--lerning_rate=1e-4"], "did you mean --learning_rate?"),
        (["sft", "--num_demo", "4"], "unknown option --num_demo; did you mean --num_demos?"),
        (["eval", "--episode", "4"], "unknown option --episode; did you mean --episodes?"),
        (["eval", "--methods", "expert", "--env-idz", "x"], "did you mean --env_ids?"),
        (["align", "--projector_step", "1"], "did you mean --projector_steps?"),
        (["make-tiny-model", "--hidden_sise", "64"], "did you mean --hidden_size?"),
        (["train", "--zzzz"], "unknown option --zzzz; see --help for the options"),
    ],
)
def test_unknown_options_name_the_closest_one(argv, suggestion, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(argv) == 2
    assert suggestion in one_error_line(capsys.readouterr().err, argv[0])
    assert not list(tmp_path.iterdir())


def test_unknown_command_gets_a_suggestion(capsys) -> None:
    assert run(["trian"]) == 2
    assert capsys.readouterr().err.strip() == "vlm-agent: error: unknown command 'trian'; did you mean train?"


@pytest.fixture(scope="module")
def damaged_model(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny model whose model.safetensors was cut off halfway (an interrupted download or copy)."""
    folder = tmp_path_factory.mktemp("damaged") / "model"
    shutil.copytree(tiny_model_dir("qwen2_vl"), folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return folder


COMMANDS_WITH_A_MODEL = {
    "train": lambda model, out: ["train", "--model_name_or_path", model, "--output_dir", out, "--num_envs", "1",
                                 "--num_steps", "1", "--total_timesteps", "1", "--no_progress_bar"],
    "sft": lambda model, out: ["sft", "--model_name_or_path", model, "--output_dir", out, "--num_demos", "2",
                               "--no_progress_bar"],
    "align": lambda model, out: ["align", "--model_name_or_path", model, "--output_dir", out, "--num_examples", "4",
                                 "--projector_steps", "0", "--language_steps", "1", "--no_progress_bar"],
    "eval": lambda model, out: ["eval", "--methods", f"local:{model}", "--out_dir", out, "--episodes", "1",
                                "--no_progress"],
}


@pytest.mark.parametrize("command", list(COMMANDS_WITH_A_MODEL))
def test_missing_damaged_and_offline_models_are_one_line(command, damaged_model, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "out")
    cases = [
        (str(tmp_path / "no" / "such" / "model"), ("does not exist", "is not a folder")),
        (str(damaged_model), ("cannot load",)),
        ("some-org/some-vlm", ("the model hub is offline (HF_HUB_OFFLINE=1)", "is not a folder")),
    ]
    for model, messages in cases:
        assert run(COMMANDS_WITH_A_MODEL[command](model, out)) in (1, 2)
        line = one_error_line(capsys.readouterr().err, command)
        assert any(message in line for message in messages), line
        assert not (tmp_path / "out").exists(), f"{command} with {model} wrote {out}"


def test_damaged_model_names_the_file_problem(damaged_model, tmp_path, capsys) -> None:
    assert run(COMMANDS_WITH_A_MODEL["train"](str(damaged_model), str(tmp_path / "run"))) == 1
    line = one_error_line(capsys.readouterr().err, "train")
    assert f"cannot load an image-text-to-text model from {damaged_model}" in line
    assert "check that the directory holds a complete, uncorrupted save_pretrained output" in line


def test_bare_train_refuses_an_unknown_env_before_the_demo_announces_anything(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["train", "--env_id", "gym_cards/Chess-v0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no "the embedded demo on ... gives the state as text" first
    assert "unknown environment id 'gym_cards/Chess-v0'" in one_error_line(captured.err, "train")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["make-tiny-model", "--arch", "gpt2", "OUT"], "unknown tiny architecture 'gpt2'"),
        (["make-tiny-model", "--image_size", "100", "OUT"], "multiple of 28"),
    ],
)
def test_make_tiny_model_errors_are_one_line(argv, message, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(argv) == 2
    assert message in one_error_line(capsys.readouterr().err, "make-tiny-model")
    (tmp_path / "file").write_text("not a folder")
    assert run(["make-tiny-model", "--out_dir", "file"]) == 2
    assert "is a file" in one_error_line(capsys.readouterr().err, "make-tiny-model")


def test_no_progress_bar_help_says_what_it_does(capsys) -> None:
    run(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--no_progress_bar, --no-progress-bar Turn progress_bar off (the same as --progress_bar false)." in out
    assert "--no_use_cot, --no-use-cot Turn use_cot off" in out
