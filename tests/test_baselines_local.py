"""The local Hugging Face agent on a real tiny VLM (random weights, built offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vlm_agent.rollout.agent import Agent, AgentInput
from vlm_agent.evaluation.evaluate import evaluate_agent

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_agent_path(tiny_model_dir) -> Path:  # type: ignore[no-untyped-def]
    return tiny_model_dir("qwen2_vl")


def _inputs(count: int) -> list[AgentInput]:
    rng = np.random.default_rng(0)
    return [AgentInput(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), f"Choose - or +. ({i})",
                       ["-", "+"], None) for i in range(count)]


def test_local_agent_answers_each_input_reproducibly_and_counts_tokens(tiny_agent_path: Path) -> None:
    from vlm_agent.evaluation.method_spec import build_agent
    from vlm_agent.evaluation.eval_config import EvalConfig

    options = EvalConfig(max_new_tokens=12, seed=3)
    first = build_agent(f"local:{tiny_agent_path}", options)
    second = build_agent(f"local:{tiny_agent_path}", options)
    assert first.name == f"local:{tiny_agent_path.name}"
    assert isinstance(first, Agent)
    answers = first.respond(_inputs(3))
    assert len(answers) == 3 and all(isinstance(answer, str) for answer in answers)
    assert second.respond(_inputs(3)) == answers  # same seed, same samples
    usage = first.usage()
    assert usage.requests == 3
    assert 3 <= usage.completion_tokens <= 3 * 12
    assert usage.prompt_tokens > 3 * 5


def test_local_agent_runs_the_evaluation_loop(tiny_agent_path: Path) -> None:
    from vlm_agent.agents.local_hf import LocalHFAgent

    agent = LocalHFAgent.from_pretrained(tiny_agent_path, max_new_tokens=8, seed=0)
    result = evaluate_agent(agent, "gym_cards/NumberLine-v0", episodes=2, seed=0, num_envs=2,
                            progress=False)
    assert result.episodes == 2
    # Random weights emit junk, never a JSON answer: every step falls back to a random move.
    assert result.invalid_rate == 1.0
    assert result.usage.requests == result.steps


def test_saved_policy_folder_loads_as_a_local_agent(tiny_agent_path: Path, tmp_path: Path) -> None:
    from vlm_agent.agents.local_hf import LocalHFAgent
    from vlm_agent.models.loading import ModelSettings
    from vlm_agent.models.policy import VLMPolicy

    policy = VLMPolicy.from_model(ModelSettings(str(tiny_agent_path), lora_r=4, lora_alpha=8))
    policy.save_pretrained(tmp_path / "checkpoint")
    agent = LocalHFAgent.from_pretrained(tmp_path / "checkpoint", max_new_tokens=6, seed=1)
    assert agent.policy.has_adapter
    assert len(agent.respond(_inputs(2))) == 2


def test_missing_local_model_is_a_clear_error(tmp_path: Path) -> None:
    from vlm_agent.agents.local_hf import LocalHFAgent

    with pytest.raises(FileNotFoundError, match="not a folder"):
        LocalHFAgent.from_pretrained(tmp_path / "nope")


def test_local_spec_accepts_a_run_folder(tmp_path: Path) -> None:
    from vlm_agent.evaluation.method_spec import local_policy_dir

    run = tmp_path / "run"
    (run / "policy").mkdir(parents=True)
    (run / "config.json").write_text("{}")  # a run folder holds the run's config.json too
    (run / "policy" / "config.json").write_text("{}")
    assert local_policy_dir(run) == run / "policy"
    assert local_policy_dir(run / "policy") == run / "policy"
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "metrics.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match="without a final policy/"):
        local_policy_dir(unfinished)


def test_saved_policy_settings_decide_sampling_unless_overridden(tiny_agent_path: Path, tmp_path: Path) -> None:
    """A policy saved before agent_settings.json existed still plays at its own temperature and length."""
    from vlm_agent.agents.settings import AgentSettings, write_agent_settings
    from vlm_agent.evaluation.method_spec import build_agent
    from vlm_agent.agents.local_hf import saved_settings
    from vlm_agent.evaluation.eval_config import EvalConfig
    from vlm_agent.models.loading import ModelSettings
    from vlm_agent.models.settings import GenerationSettings
    from vlm_agent.models.policy import VLMPolicy

    policy = VLMPolicy.from_model(ModelSettings(str(tiny_agent_path), use_lora=False),
                                  GenerationSettings(temperature=0.7, max_new_tokens=9))
    folder = policy.save_pretrained(tmp_path / "policy")
    assert saved_settings(folder) == AgentSettings(temperature=0.7, max_new_tokens=9)
    write_agent_settings(folder, AgentSettings(show_state=True, max_new_tokens=7))
    assert saved_settings(folder) == AgentSettings(show_state=True, temperature=0.7, max_new_tokens=7)
    agent = build_agent(f"local:{folder}")
    assert (agent.policy.settings.temperature, agent.policy.settings.max_new_tokens) == (0.7, 7)
    agent = build_agent(f"local:{folder}", EvalConfig(max_new_tokens=5))
    assert agent.policy.settings.max_new_tokens == 5
