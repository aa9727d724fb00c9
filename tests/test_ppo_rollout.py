"""The rollout collector on real envs: values of time-limited episodes are bootstrapped."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vlm_agent.parsing import InvalidActionPolicy  # noqa: E402
from vlm_agent.policy import GenerationSettings, VLMPolicy  # noqa: E402
from vlm_agent.prompts import prompt_for  # noqa: E402
from vlm_agent.rollout import RolloutCollector  # noqa: E402


def test_truncated_steps_bootstrap_from_the_final_observation_and_terminated_ones_do_not(tiny_model_dir):
    policy = VLMPolicy.from_model(
        str(tiny_model_dir("qwen2_vl")), GenerationSettings(max_new_tokens=4, temperature=1.0)
    )
    # max_position=1: start and target are 0 and 1, so every episode ends by step 2, by termination
    # (the right move) or by the time limit of 2 * max_position steps.
    collector = RolloutCollector(
        "gym_cards/NumberLine-v0", num_envs=3, seed=0, policy=policy,
        prompt_template=prompt_for("gym_cards/NumberLine-v0"), invalid_policy=InvalidActionPolicy("random"),
        rng=np.random.default_rng(0), env_kwargs={"max_position": 1},
    )
    rollout, _ = collector.collect(6)
    assert rollout.truncated.any() and rollout.terminated.any()
    assert torch.isfinite(rollout.next_values).all()
    assert (rollout.next_values[rollout.terminated] == 0).all()
    truncated_values = rollout.next_values[rollout.truncated]
    assert (truncated_values != 0).all()  # the value head's estimate of the final observation
