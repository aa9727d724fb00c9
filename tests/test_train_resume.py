"""`vlm-agent train --output_dir RUN --resume`: the run's own config.json, only run-length, saving and
logging options may change, a refused resume changes no file, and a moved run folder resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


torch = pytest.importorskip("torch")

from model_helpers import run_cli, tiny_train_flags  # noqa: E402


def run(argv: list[str]) -> int:
    return run_cli(argv)


def tiny_run_flags(model_dir: Path, run_dir: Path, total_timesteps: int = 8) -> list[str]:
    return tiny_train_flags(model_dir, run_dir, total_timesteps)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(err: str, command: str = "train") -> str:
    """The one `vlm-agent <command>: error:` line of stderr, and nothing else there."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"vlm-agent {command}: error: "), err
    return lines[0]


def updates(run_dir: Path) -> list[int]:
    return [json.loads(line)["update"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_continues_from_config_json_and_refuses_what_may_not_change(tiny_model_dir, tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    assert run(tiny_run_flags(tiny_model_dir("qwen2_vl"), run_dir)) == 0
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["total_timesteps"] == 8 and saved["output_dir"] == "." and saved["resume"] is False
    before = tree(run_dir)
    capsys.readouterr()

    refusals = [
        (["--num_envs", "4"], "--num_envs cannot change when a run resumes"),
        (["--seed", "5"], "--seed cannot change when a run resumes"),
        (["--env_id", "gym_cards/Blackjack-v0"], "--env_id cannot change when a run resumes"),
        (["--lora_r", "8"], "--lora_r cannot change when a run resumes"),
        (["--model_name_or_path", str(tiny_model_dir("llava_next"))], "--model_name_or_path cannot change"),
        (["--totl_timesteps", "16"], "unknown option --totl_timesteps; did you mean --total_timesteps?"),
        (["--total_timesteps", "0"], "total_timesteps=0 must be a positive integer"),
    ]
    for extra, message in refusals:
        assert run(["train", "--output_dir", str(run_dir), "--resume", *extra]) == 2, extra
        line = error_line(capsys.readouterr().err)
        assert message in line, line
        assert tree(run_dir) == before, f"{extra} changed the run folder"
    assert run(["train", "--resume"]) == 2
    assert "--resume needs --output_dir RUN" in error_line(capsys.readouterr().err)
    assert run(["train", "--output_dir", str(tmp_path / "nothing"), "--resume"]) == 1
    assert "does not exist: it is not a run folder" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "nothing").exists()

    # No other flag: everything from config.json. The same value of a fixed option is accepted;
    # --total_timesteps extends the run by two updates.
    assert run(["train", "--output_dir", str(run_dir), "--resume", "--num_envs", "2", "--total_timesteps", "16"]) == 0
    out = capsys.readouterr()
    assert "Resuming from" in out.err and "update_000002" in out.err
    assert updates(run_dir) == [1, 2, 3, 4]
    assert json.loads((run_dir / "config.json").read_text())["total_timesteps"] == 16
    assert (run_dir / "checkpoints" / "update_000004" / "manifest.json").is_file()


def names_old_place(run_dir: Path, old: Path) -> list[Path]:
    """The files a resume or an evaluation reads that still name the run's old place."""
    read = [run_dir / "config.json", *run_dir.glob("checkpoints/*/state.json"), run_dir / "policy" / "policy_settings.json",
            *run_dir.glob("checkpoints/*/export/policy_settings.json")]
    return [path for path in read if str(old) in path.read_text()]


def test_a_moved_run_folder_with_its_base_model_inside_resumes(tiny_model_dir, tmp_path, capsys) -> None:
    first = tmp_path / "first" / "run"
    shutil.copytree(tiny_model_dir("qwen2_vl"), first / "base_model")
    assert run(tiny_run_flags(first / "base_model", first)) == 0
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(first, moved)
    shutil.rmtree(tmp_path / "first")  # nothing may still point there
    assert not names_old_place(moved, first)
    assert json.loads((moved / "config.json").read_text())["model_name_or_path"] == "base_model"
    assert json.loads((moved / "policy" / "policy_settings.json").read_text())["model"]["model_name_or_path"] == (
        "../base_model")
    capsys.readouterr()
    assert run(["train", "--output_dir", str(moved), "--resume", "--total_timesteps", "16"]) == 0
    assert updates(moved) == [1, 2, 3, 4]
    # The LoRA policy finds its base model through the relative path.
    assert run(["eval", "--methods", f"local:{moved}", "--episodes", "1", "--num_envs", "1", "--max_new_tokens", "4",
                "--out_dir", str(tmp_path / "eval"), "--no_progress"]) == 0


@pytest.mark.slow
def test_a_moved_demo_run_resumes_where_it_was_moved(tmp_path, torch_single_thread, capsys) -> None:
    """The demo keeps its warm start inside the run (base_model): paths in the run are relative to it."""
    first = tmp_path / "first" / "run"
    demo = [
        "train", "--output_dir", str(first), "--num_envs", "2", "--num_steps", "2", "--total_timesteps", "8",
        "--max_new_tokens", "8", "--sft_num_demos", "4", "--sft_epochs", "1", "--ppo_epochs", "1",
        "--mini_batch_size", "2", "--align_projector_steps", "1", "--align_language_steps", "1",
        "--align_num_examples", "16", "--final_eval_episodes", "0", "--save_every", "1", "--no_progress_bar",
    ]
    assert run(demo) == 0
    assert updates(first) == [1, 2]
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(first, moved)
    shutil.rmtree(tmp_path / "first")  # nothing may still point there
    assert not names_old_place(moved, first)
    assert json.loads((moved / "config.json").read_text())["model_name_or_path"] == "base_model"
    capsys.readouterr()

    assert run(["train", "--output_dir", str(moved), "--resume", "--total_timesteps", "16",
                "--final_eval_episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert updates(moved) == [1, 2, 3, 4]
    assert "  warm start " in out and "  trained " in out  # the comparison found base_model in the moved run
    assert not (tmp_path / "first").exists()
