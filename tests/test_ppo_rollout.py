"""The rollout collector (vlm_agent.rollout.collector) on real envs, played by an HFEngine
(vlm_agent.rollout.engine): values of time-limited episodes are bootstrapped."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gym_cards  # noqa: E402, F401  (registers the environments)
from vlm_agent.models.policy import VLMPolicy  # noqa: E402
from vlm_agent.models.settings import GenerationSettings  # noqa: E402
from vlm_agent.prompting.env_prompts import prompt_for  # noqa: E402
from vlm_agent.prompting.invalid_actions import InvalidActionPolicy  # noqa: E402
from vlm_agent.rollout.collector import RolloutCollector  # noqa: E402
from vlm_agent.rollout.engine import HFEngine  # noqa: E402

ENV_ID = "gym_cards/NumberLine-v0"


def test_next_values_are_the_values_of_the_observations_that_followed(tiny_model_dir):
    policy = VLMPolicy.from_model(
        str(tiny_model_dir("qwen2_vl")), GenerationSettings(max_new_tokens=4, temperature=1.0)
    )
    template = prompt_for(ENV_ID)
    num_envs, num_steps = 3, 6
    # max_position=1: start and target are 0 and 1, so every episode ends by step 2, by termination
    # (the right move) or by the time limit of 2 * max_position steps.
    rng = np.random.default_rng(0)  # the engine's sampling seeds and the collector's rescues, as in training
    collector = RolloutCollector(
        ENV_ID, num_envs=num_envs, seed=0, engine=HFEngine(policy, rng), prompt_template=template,
        invalid_policy=InvalidActionPolicy("random"), rng=rng, env_kwargs={"max_position": 1},
    )
    rollout, stats = collector.collect(num_steps, log_samples=num_envs * num_steps)
    assert rollout.truncated.any() and rollout.terminated.any()
    assert (rollout.next_values[rollout.terminated] == 0).all()

    # Steps the episode continued after bootstrap from the value stored at the next step, exactly.
    done = rollout.terminated | rollout.truncated
    for t in range(num_steps - 1):
        for n in range(num_envs):
            if not done[t, n]:
                assert rollout.next_values[t, n] == rollout.values[t + 1, n]

    # Replay the executed actions in fresh copies of the environments to get the observations that
    # followed each truncated step and the last one, and score them with the value head directly.
    executed = {(log["step"], log["env"]): log["executed_action"] for log in stats.sample_logs}
    checked_truncated = 0
    for n in range(num_envs):
        env = gym.make(ENV_ID, max_position=1)
        observation, _ = env.reset(seed=n)
        for t in range(num_steps):
            legal = list(env.unwrapped.legal_actions())
            observation, _, terminated, truncated, _ = env.step(legal.index(executed[t, n]))
            assert (terminated, truncated) == (bool(rollout.terminated[t, n]), bool(rollout.truncated[t, n]))
            if (truncated and not terminated) or (t == num_steps - 1 and not (terminated or truncated)):
                prompt = template.render(env.unwrapped.describe(), list(env.unwrapped.legal_actions()))
                expected = policy.state_values([observation], [prompt]).double()[0]
                assert rollout.next_values[t, n] == pytest.approx(float(expected), abs=1e-5)
                assert expected != 0
                checked_truncated += bool(truncated)
            if terminated or truncated:
                observation, _ = env.reset()
        env.close()
    assert checked_truncated > 0
