"""`vlm-agent train --resume` against damaged checkpoints and swapped base models: one line, nothing overwritten."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


torch = pytest.importorskip("torch")

from model_helpers import run_cli, tiny_train_flags  # noqa: E402


def run(argv: list[str]) -> int:
    return run_cli(argv)


def train_flags(model_dir: Path, run_dir: Path, total_timesteps: int = 4) -> list[str]:
    return tiny_train_flags(model_dir, run_dir, total_timesteps)


def start_run(model_dir: Path, run_dir: Path) -> None:
    """A run as `vlm-agent train` leaves it after its first checkpoint, without spending time on rollouts."""
    from trl import TrlParser

    from vlm_agent.training.ppo_config import VLMPPOConfig
    from vlm_agent.training.ppo_trainer import VLMPPOTrainer
    from vlm_agent.training.run_config import write_run_config

    (config,) = TrlParser(VLMPPOConfig).parse_args_and_config(train_flags(model_dir, run_dir)[1:])
    trainer = VLMPPOTrainer(config)
    run_dir.mkdir(parents=True)
    write_run_config(config, run_dir)
    trainer.save_checkpoint()
    (run_dir / "metrics.jsonl").write_text('{"update": 0}\n')
    trainer.collector.close()


def error_line(err: str) -> str:
    """The one `vlm-agent train: error:` line among stderr (transformers draws progress bars there too)."""
    assert "Traceback" not in err, err
    [line] = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("vlm-agent train: error:")]
    return line


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_refuses_another_model_at_the_same_path(tiny_model_dir, tmp_path, capsys) -> None:
    from safetensors.torch import load_file, save_file

    from vlm_agent.demo.tiny_models import make_tiny_model

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir("qwen2_vl"), model)
    run_dir = tmp_path / "run"
    start_run(model, run_dir)

    weights = load_file(model / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 0.5  # same shapes, other weights: the path alone cannot tell
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    capsys.readouterr()
    assert run([*train_flags(model, run_dir), "--resume"]) == 1
    assert error_line(capsys.readouterr().err).startswith(
        f"vlm-agent train: error: the model at {model} is not the base model this run started "
        "from (model.safetensors changed since); resume with the original model")

    make_tiny_model("qwen2_vl", model, seed=0, hidden_size=96, num_layers=1)  # another width
    capsys.readouterr()
    assert run([*train_flags(model, run_dir), "--resume"]) == 1
    assert "(config.json, model.safetensors changed since)" in error_line(capsys.readouterr().err)


def test_a_run_with_only_damaged_checkpoints_gets_advice_that_is_not_circular(tiny_model_dir, tmp_path, capsys) -> None:
    model = tiny_model_dir("qwen2_vl")
    run_dir = tmp_path / "run"
    start_run(model, run_dir)
    assert run(train_flags(model, run_dir)) == 1  # intact: the advice is --resume
    assert "already holds a run (metrics.jsonl); pass --resume to continue it" in error_line(capsys.readouterr().err)

    damaged = run_dir / "checkpoints" / "update_000000"
    (damaged / "manifest.json").unlink()
    before = tree(run_dir / "checkpoints")
    assert run(train_flags(model, run_dir)) == 1
    err = error_line(capsys.readouterr().err)
    assert "but no complete checkpoint to continue it from; choose another --output_dir, or move" in err
    assert "pass --resume" not in err
    assert run([*train_flags(model, run_dir), "--resume"]) == 1
    err = error_line(capsys.readouterr().err)
    assert "choose another --output_dir, or move" in err and "drop --resume" not in err
    assert tree(run_dir / "checkpoints") == before


@pytest.mark.slow
def test_resume_passes_over_a_damaged_latest_checkpoint_and_writes_beside_it(
        tiny_model_dir, tmp_path, capsys) -> None:
    model = tiny_model_dir("qwen2_vl")
    run_dir = tmp_path / "run"
    assert run(train_flags(model, run_dir, 8)) == 0
    damaged = run_dir / "checkpoints" / "update_000002"
    (damaged / "manifest.json").unlink()
    before = tree(damaged)
    capsys.readouterr()

    assert run([*train_flags(model, run_dir, 8), "--resume"]) == 0
    [note] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Resuming from")]
    assert f"Resuming from {run_dir / 'checkpoints' / 'update_000001'} (update 1)" in note
    assert "passed over newer damaged checkpoints, left as they are: update_000002: " in note
    assert "no manifest.json" in note
    assert tree(damaged) == before
    assert (run_dir / "checkpoints" / "update_000002-2" / "manifest.json").is_file()
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "update_000002-2"
