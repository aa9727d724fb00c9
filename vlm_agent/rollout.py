"""Collect PPO rollouts: N environments -> prompts -> one batched generation -> parse -> step.

One transition is one environment step: the whole generated answer is one action, scored by its
CoT-scaled log-probability (see `vlm_agent.log_probs`). Environments run in a Gymnasium
`SyncVectorEnv` with autoreset disabled: when an episode ends, the collector first reads the final
state (its text description and, for truncated episodes, its value) and only then resets that
environment, so that GAE can bootstrap from the final observation of a truncated episode.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vlm_agent.parsing import InvalidActionPolicy
from vlm_agent.policy import PolicySample, VLMPolicy


@dataclass
class Rollout:
    """One update's worth of transitions; tensors are `[T, N]` (steps x environments).

    `samples[t][n]` is what the policy generated at step t in environment n. `next_values[t, n]`
    is the value of the observation after that step (the final observation when the episode
    ended there; 0 when it terminated), ready for `ppo_math.compute_gae`.
    """

    samples: list[list[PolicySample]]
    rewards: torch.Tensor
    values: torch.Tensor
    log_probs: torch.Tensor
    next_values: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    invalid: torch.Tensor

    @property
    def num_steps(self) -> int:
        return self.rewards.shape[0]

    def flat_samples(self) -> list[PolicySample]:
        """Samples in `[T, N]` row-major order, matching `tensor.reshape(-1)`."""
        return [sample for row in self.samples for sample in row]


@dataclass
class FinishedEpisode:
    """An episode that ended during a rollout."""

    episode_return: float
    length: int
    success: bool
    invalid_steps: int


@dataclass
class RolloutStats:
    """Counters of one `collect` call."""

    episodes: list[FinishedEpisode] = field(default_factory=list)
    generated_tokens: int = 0
    generation_seconds: float = 0.0
    seconds: float = 0.0
    sample_logs: list[dict[str, Any]] = field(default_factory=list)


def _return_env(env: Any) -> Any:
    """Environment factory that hands back an existing environment (for restored checkpoints)."""
    return env


def make_vector_env(env_id: str, num_envs: int, env_kwargs: dict[str, Any] | None = None, envs: Sequence[Any] | None = None):
    """`SyncVectorEnv` of `num_envs` copies of `env_id` with autoreset disabled.

    `envs` rebuilds the vector env around existing environments (unpickled from a checkpoint).
    """
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    import gym_cards  # noqa: F401  (registers the gym_cards/* ids)

    if envs is not None:
        factories = [functools.partial(_return_env, env) for env in envs]
    else:
        try:
            gym.spec(env_id)
        except gym.error.Error as error:
            known = ", ".join(sorted(name for name in gym.registry if name.startswith("gym_cards/")))
            raise ValueError(f"unknown environment {env_id!r} ({error}); known gym_cards ids: {known}") from error
        factories = [functools.partial(gym.make, env_id, **(env_kwargs or {})) for _ in range(num_envs)]
    return SyncVectorEnv(factories, autoreset_mode=AutoresetMode.DISABLED)


class RolloutCollector:
    """Steps N environments with a `VLMPolicy`, keeping episodes running across updates.

    Args:
        env_id: Gymnasium id.
        num_envs: Environments in this process.
        seed: Seed of the first reset of environment i is `seed + i` (the trainer offsets it by rank).
        policy: The policy that acts.
        prompt_template: `vlm_agent.prompts.prompt_for(env_id, cot=...)`.
        invalid_policy: What an unusable answer executes.
        rng: Drives sampling seeds and the random fallback of invalid answers.
        env_kwargs: Keyword arguments of `gym.make`.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int,
        policy: VLMPolicy,
        prompt_template: Any,
        invalid_policy: InvalidActionPolicy,
        rng: np.random.Generator,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.env_id = env_id
        self.policy = policy
        self.prompt_template = prompt_template
        self.invalid_policy = invalid_policy
        self.rng = rng
        self.envs = make_vector_env(env_id, num_envs, env_kwargs)
        self.num_envs = num_envs
        observations, _ = self.envs.reset(seed=[seed + i for i in range(num_envs)])
        self.observations = np.asarray(observations)
        self.episode_returns = np.zeros(num_envs)
        self.episode_lengths = np.zeros(num_envs, dtype=np.int64)
        self.episode_invalid = np.zeros(num_envs, dtype=np.int64)

    def _texts(self) -> tuple[list[str], list[list[str]]]:
        descriptions = self.envs.call("describe")
        legal_actions = [list(actions) for actions in self.envs.call("legal_actions")]
        prompts = [self.prompt_template.render(text, legal) for text, legal in zip(descriptions, legal_actions)]
        return prompts, legal_actions

    def collect(
        self, num_steps: int, *, log_samples: int = 0, on_step: Callable[[int], None] | None = None
    ) -> tuple[Rollout, RolloutStats]:
        """Run `num_steps` steps in every environment and return the transitions and episode stats."""
        started = time.perf_counter()
        n = self.num_envs
        shape = (num_steps, n)
        rewards = torch.zeros(shape, dtype=torch.float64)
        values = torch.zeros(shape, dtype=torch.float64)
        log_probs = torch.zeros(shape, dtype=torch.float64)
        next_values = torch.zeros(shape, dtype=torch.float64)
        terminated = torch.zeros(shape, dtype=torch.bool)
        truncated = torch.zeros(shape, dtype=torch.bool)
        invalid = torch.zeros(shape, dtype=torch.bool)
        samples: list[list[PolicySample]] = []
        stats = RolloutStats()

        for step in range(num_steps):
            prompts, legal_actions = self._texts()
            generation_started = time.perf_counter()
            out = self.policy.act(
                list(self.observations), prompts, legal_actions, invalid_policy=self.invalid_policy, rng=self.rng
            )
            stats.generation_seconds += time.perf_counter() - generation_started
            stats.generated_tokens += sum(len(sample.completion_ids) for sample in out.samples)
            observations, env_rewards, env_terminated, env_truncated, infos = self.envs.step(
                np.asarray(out.action_indices)
            )
            step_rewards = np.asarray(env_rewards, dtype=np.float64) + np.asarray(out.reward_adjustments)
            samples.append(out.samples)
            rewards[step] = torch.from_numpy(step_rewards)
            values[step] = out.values.double()
            log_probs[step] = out.log_probs.double()
            terminated[step] = torch.from_numpy(np.asarray(env_terminated, dtype=bool))
            truncated[step] = torch.from_numpy(np.asarray(env_truncated, dtype=bool))
            invalid[step] = torch.tensor(out.invalid)
            self.episode_returns += step_rewards
            self.episode_lengths += 1
            self.episode_invalid += np.asarray(out.invalid, dtype=np.int64)
            for env_index in range(min(n, max(0, log_samples - len(stats.sample_logs)))):
                stats.sample_logs.append(
                    {
                        "step": step,
                        "env": env_index,
                        "prompt": prompts[env_index],
                        "answer": out.texts[env_index],
                        "parsed_action": legal_actions[env_index][out.parsed[env_index].index]
                        if out.parsed[env_index].index is not None
                        else None,
                        "parse_error": out.parsed[env_index].error,
                        "executed_action": legal_actions[env_index][out.action_indices[env_index]],
                        "reward": float(step_rewards[env_index]),
                    }
                )

            done = np.logical_or(env_terminated, env_truncated)
            observations = np.asarray(observations)
            cut = np.asarray(env_truncated, dtype=bool) & ~np.asarray(env_terminated, dtype=bool)
            if cut.any():
                # Time limit: the final state still has a future; estimate it before resetting.
                final_prompts, _ = self._texts()
                indices = np.flatnonzero(cut)
                final_values = self.policy.state_values(
                    [observations[i] for i in indices], [final_prompts[i] for i in indices]
                )
                next_values[step, torch.from_numpy(indices)] = final_values.double()
            if done.any():
                success = infos.get("success", np.zeros(n, dtype=bool))
                for i in np.flatnonzero(done):
                    stats.episodes.append(
                        FinishedEpisode(
                            episode_return=float(self.episode_returns[i]),
                            length=int(self.episode_lengths[i]),
                            success=bool(success[i]),
                            invalid_steps=int(self.episode_invalid[i]),
                        )
                    )
                self.episode_returns[done] = 0.0
                self.episode_lengths[done] = 0
                self.episode_invalid[done] = 0
                reset_observations, _ = self.envs.reset(options={"reset_mask": np.asarray(done, dtype=bool)})
                observations[done] = np.asarray(reset_observations)[done]
            if step > 0:
                # The value of this step's observation is the bootstrap of the previous step.
                continuing = ~(terminated[step - 1] | truncated[step - 1])
                next_values[step - 1] = torch.where(continuing, values[step], next_values[step - 1])
            self.observations = observations
            if on_step is not None:
                on_step(n)

        last_done = terminated[-1] | truncated[-1]
        if not bool(last_done.all()):
            prompts, _ = self._texts()
            bootstrap = self.policy.state_values(list(self.observations), prompts).double()
            next_values[-1] = torch.where(last_done, next_values[-1], bootstrap)
        stats.seconds = time.perf_counter() - started
        rollout = Rollout(
            samples=samples,
            rewards=rewards,
            values=values,
            log_probs=log_probs,
            next_values=next_values,
            terminated=terminated,
            truncated=truncated,
            invalid=invalid,
        )
        return rollout, stats

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the episodes exactly (pickled into checkpoints)."""
        return {
            "envs": list(self.envs.envs),
            "observations": self.observations.copy(),
            "episode_returns": self.episode_returns.copy(),
            "episode_lengths": self.episode_lengths.copy(),
            "episode_invalid": self.episode_invalid.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore environments and counters written by `state_dict`."""
        envs = state["envs"]
        if len(envs) != self.num_envs:
            raise ValueError(f"checkpoint holds {len(envs)} environments, this run has num_envs={self.num_envs}")
        self.envs.close()
        self.envs = make_vector_env(self.env_id, self.num_envs, envs=envs)
        self.observations = np.asarray(state["observations"])
        self.episode_returns = np.asarray(state["episode_returns"], dtype=np.float64)
        self.episode_lengths = np.asarray(state["episode_lengths"], dtype=np.int64)
        self.episode_invalid = np.asarray(state["episode_invalid"], dtype=np.int64)

    def close(self) -> None:
        self.envs.close()
