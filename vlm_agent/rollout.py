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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vlm_agent.env_state import (
    EnvStateError,
    EpisodeLog,
    game_key,
    observation_fingerprint,
    replay_episode,
    rng_state,
)
from vlm_agent.environments import batch_images, check_env, observation_image
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


def make_vector_env(env_id: str, num_envs: int, env_kwargs: dict[str, Any] | None = None):
    """`SyncVectorEnv` of `num_envs` copies of `gym.make(env_id, **env_kwargs)` with autoreset disabled.

    Raises:
        ValueError: An unknown id or an option the env does not take (`vlm_agent.environments.check_env`).
    """
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    check_env(env_id, env_kwargs)
    factories = [functools.partial(gym.make, env_id, **(env_kwargs or {})) for _ in range(num_envs)]
    return SyncVectorEnv(factories, autoreset_mode=AutoresetMode.DISABLED)


#: Version of `RolloutCollector.state_dict`'s layout.
COLLECTOR_STATE_FORMAT = 1


class RolloutCollector:
    """Steps N environments with a `VLMPolicy`, keeping episodes running across updates.

    Observations may be image arrays or mappings holding an ``"image"`` (ALFWorld); the prompt
    text and the legal actions are read from each environment every step (`describe()`,
    `legal_actions()`), so actions that change from step to step (ALFWorld's admissible
    commands) are offered as they are now.

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
        self.env_kwargs = dict(env_kwargs or {})
        self.policy = policy
        self.prompt_template = prompt_template
        self.invalid_policy = invalid_policy
        self.rng = rng
        self.envs = make_vector_env(env_id, num_envs, self.env_kwargs)
        self.num_envs = num_envs
        seeds = [seed + i for i in range(num_envs)]
        observations, infos = self.envs.reset(seed=seeds)
        self.images = batch_images(observations, num_envs)
        # How each env's current episode started, and its actions since: the checkpointed env state.
        self.episode_logs = [EpisodeLog(reset_seed=s, game=_game_at(infos, i)) for i, s in enumerate(seeds)]
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
                list(self.images), prompts, legal_actions, invalid_policy=self.invalid_policy, rng=self.rng
            )
            stats.generation_seconds += time.perf_counter() - generation_started
            stats.generated_tokens += sum(len(sample.completion_ids) for sample in out.samples)
            for i, action in enumerate(out.action_indices):
                self.episode_logs[i].actions.append(int(action))
                self.episode_logs[i].commands.append(str(legal_actions[i][action]))
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
            images = batch_images(observations, n)
            cut = np.asarray(env_truncated, dtype=bool) & ~np.asarray(env_terminated, dtype=bool)
            if cut.any():
                # Time limit: the final state still has a future; estimate it before resetting.
                final_prompts, _ = self._texts()
                indices = np.flatnonzero(cut)
                final_values = self.policy.state_values(
                    [images[i] for i in indices], [final_prompts[i] for i in indices]
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
                    # The next episode starts from the generator as it is now (an unseeded reset).
                    self.episode_logs[i] = EpisodeLog(rng_before_reset=rng_state(self.envs.envs[i]))
                self.episode_returns[done] = 0.0
                self.episode_lengths[done] = 0
                self.episode_invalid[done] = 0
                reset_observations, reset_infos = self.envs.reset(options={"reset_mask": np.asarray(done, dtype=bool)})
                reset_images = batch_images(reset_observations, n)
                for i in np.flatnonzero(done):
                    images[i] = reset_images[i]
                    self.episode_logs[i].game = _game_at(reset_infos, i)
            if step > 0:
                # The value of this step's observation is the bootstrap of the previous step.
                continuing = ~(terminated[step - 1] | truncated[step - 1])
                next_values[step - 1] = torch.where(continuing, values[step], next_values[step - 1])
            self.images = images
            if on_step is not None:
                on_step(n)

        last_done = terminated[-1] | truncated[-1]
        if not bool(last_done.all()):
            prompts, _ = self._texts()
            bootstrap = self.policy.state_values(list(self.images), prompts).double()
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
        """Everything needed to continue the episodes exactly, as JSON data (see `vlm_agent.env_state`).

        Per environment: how its episode started, the actions since, and for checking the replay
        its generator state and a SHA-256 of its current observation; plus the episode counters.
        """
        environments = []
        for i, env in enumerate(self.envs.envs):
            environments.append(
                {
                    "episode": self.episode_logs[i].to_json(),
                    "rng": rng_state(env),
                    "observation_sha256": observation_fingerprint(self.images[i], env),
                }
            )
        return {
            "format": COLLECTOR_STATE_FORMAT,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "environments": environments,
            "episode_returns": self.episode_returns.tolist(),
            "episode_lengths": self.episode_lengths.tolist(),
            "episode_invalid": self.episode_invalid.tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Rebuild the episodes written by `state_dict` by replaying them, and restore the counters.

        Raises:
            EnvStateError: A state of another format or environment count, or a replay that does
                not reproduce the saved observation and generator state.
        """
        if not isinstance(state, Mapping) or state.get("format") != COLLECTOR_STATE_FORMAT:
            found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
            raise EnvStateError(f"environment state has format {found!r}, this version reads {COLLECTOR_STATE_FORMAT}")
        environments = state["environments"]
        if len(environments) != self.num_envs:
            raise EnvStateError(
                f"checkpoint holds {len(environments)} environments, this run has num_envs={self.num_envs}"
            )
        images = []
        logs = []
        for i, (env, saved) in enumerate(zip(self.envs.envs, environments)):
            log = EpisodeLog.from_json(saved["episode"])
            observation, _ = replay_episode(env, log)
            if rng_state(env) != saved["rng"]:
                raise EnvStateError(
                    f"environment {i}: its generator after replaying the saved episode differs from the checkpoint's; "
                    "its randomness does not all come from env.np_random, so it cannot be resumed exactly"
                )
            if observation_fingerprint(observation, env) != saved["observation_sha256"]:
                raise EnvStateError(
                    f"environment {i}: replaying the saved episode gave a different observation than the checkpoint's; "
                    "resume with the same environment version and env_kwargs"
                )
            images.append(observation_image(observation))
            logs.append(log)
        self.images = images
        self.episode_logs = logs
        self.episode_returns = np.asarray(state["episode_returns"], dtype=np.float64)
        self.episode_lengths = np.asarray(state["episode_lengths"], dtype=np.int64)
        self.episode_invalid = np.asarray(state["episode_invalid"], dtype=np.int64)

    def close(self) -> None:
        self.envs.close()


def _game_at(infos: Mapping[str, Any], index: int) -> str:
    """The game environment `index` plays, from a vector env's batched infos ("" for envs without games)."""
    values = infos.get("gamefile")
    mask = infos.get("_gamefile")
    if values is None or (mask is not None and not mask[index]):
        return ""
    return game_key(str(values[index] or ""))
