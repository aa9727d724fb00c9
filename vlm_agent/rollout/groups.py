"""Rollouts in groups, for the critic-free algorithms (:mod:`vlm_agent.algorithms.group`).

Each update is one *round*: the N = groups x G environments each play one episode through the one
loop (:mod:`vlm_agent.rollout.loop`), the G environments of group ``g`` from the same reset seed
(``seed + round * groups + g``), so their episodes start from the same state exactly. The round
ends when every episode has ended, or after ``max_steps`` steps (the episodes still running are cut
there: their return is what they collected). Nothing carries over to the next round, so the
checkpointed state is the round counter.

Groups never straddle processes: each process runs its own groups (the trainer offsets ``seed``
by rank), so every group statistic is local.

Each step records the exact state it was taken in (``state_key``: a SHA-256 of the image the agent
saw and its prompt, which holds the text state and the legal actions), for GiGPO's anchor states.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlm_agent.models.batching import PolicySample
from vlm_agent.prompting.invalid_actions import InvalidActionPolicy
from vlm_agent.prompting.templates import history_action
from vlm_agent.rollout.agent import AgentInput
from vlm_agent.rollout.collector import RolloutStats
from vlm_agent.rollout.engine import RolloutEngine
from vlm_agent.rollout.env_state import EnvStateError
from vlm_agent.rollout.environments import check_env
from vlm_agent.rollout.loop import AgentLoop, HeldOutEpisodes, make_env

#: Version of `GroupCollector.state_dict`'s layout.
GROUP_STATE_FORMAT = "group-rounds-1"


def state_key(agent_input: AgentInput) -> str:
    """An exact key of the state an agent was shown: SHA-256 of its image (shape, dtype, bytes) and prompt."""
    image = np.ascontiguousarray(agent_input.image)
    digest = hashlib.sha256(str((image.shape, image.dtype.str)).encode())
    digest.update(image.tobytes())
    digest.update(agent_input.prompt.encode())
    return digest.hexdigest()


@dataclass
class GroupRollout:
    """One round's steps, ``[M]`` each, in the order they were taken (step-major).

    ``group`` and ``trajectory`` are ids unique within the round; ``step`` is the step's index in
    its episode. ``values`` are 0 (no critic); ``log_probs`` the CoT-scaled log-probs at sampling.
    """

    samples: list[PolicySample]
    rewards: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    invalid: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    group: torch.Tensor
    trajectory: torch.Tensor
    step: torch.Tensor
    state_keys: list[str]

    def flat_samples(self) -> list[PolicySample]:
        return self.samples

    @property
    def num_steps(self) -> int:
        return len(self.samples)


class GroupCollector:
    """Plays rounds of grouped episodes with a rollout engine (see the module docstring).

    Args:
        env_id: Gymnasium id.
        num_groups: Groups per round in this process.
        group_size: Episodes per group (G).
        seed: Group ``g`` of round ``r`` resets with ``seed + r * stride + g``.
        engine: The engine that acts; its generator also resolves unusable answers.
        prompt_template: The prompt of the env.
        invalid_policy: What an unusable answer executes.
        max_steps: Steps after which a round's running episodes are cut.
        env_kwargs: Keyword arguments of `gym.make`.
        stride: Seeds a round moves on by (default ``num_groups``; the trainer uses ``num_groups`` x
            processes and offsets ``seed`` by rank, so no two groups of a run share a seed).
    """

    def __init__(self, env_id: str, num_groups: int, group_size: int, seed: int, engine: RolloutEngine,
                 prompt_template: Any, invalid_policy: InvalidActionPolicy, max_steps: int,
                 env_kwargs: dict[str, Any] | None = None, stride: int | None = None) -> None:
        check_env(env_id, env_kwargs)
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.num_groups = num_groups
        self.group_size = group_size
        self.num_envs = num_groups * group_size
        self.seed = seed
        self.engine = engine
        self.prompt_template = prompt_template
        self.invalid_policy = invalid_policy
        self.max_steps = max_steps
        self.stride = num_groups if stride is None else stride
        self.round = 0
        self.envs = [make_env(env_id, self.env_kwargs) for _ in range(self.num_envs)]

    def _seed_of(self, _: int, episode: int) -> int:
        return self.seed + self.round * self.stride + episode // self.group_size

    def collect(self, num_steps: int | None = None, *, log_samples: int = 0,
                on_step: Callable[[int], None] | None = None) -> tuple[GroupRollout, RolloutStats]:
        """Play one round (``num_steps`` overrides ``max_steps``) and return its steps and episode stats."""
        started = time.perf_counter()
        limit = self.max_steps if num_steps is None else num_steps
        seconds_before = self.engine.generation_seconds
        tokens_before = self.engine.usage().completion_tokens
        schedule = HeldOutEpisodes(self.num_envs, self.seed, seed_of=self._seed_of, rescue_rng=self.engine.rng)
        loop = AgentLoop(self.envs, self.prompt_template, self.invalid_policy, schedule)
        stats = RolloutStats()
        records: list[dict[str, Any]] = []
        last_of: dict[int, int] = {}
        for step_index in range(limit):
            if not loop.active:
                break
            steps = loop.step(self.engine)
            for s in steps:
                last_of[s.slot] = len(records)
                records.append({"step": s, "index": step_index})
                if s.episode is not None:
                    stats.episodes.append(s.episode)
            for s in steps[: max(0, log_samples - len(stats.sample_logs))]:
                legal = s.agent_input.legal_actions
                stats.sample_logs.append({
                    "step": step_index, "env": s.slot, "prompt": s.agent_input.prompt, "answer": s.text,
                    "parsed_action": legal[s.parsed.index] if s.parsed.index is not None else None,
                    "parse_error": s.parsed.error, "executed_action": history_action(legal, s.action.index), "reward": float(s.reward),
                })
            if on_step is not None:
                on_step(len(steps))
        cut = set(loop.active)  # still running after `limit` steps: cut there
        steps = [record["step"] for record in records]
        truncated = [s.truncated or (s.slot in cut and last_of[s.slot] == i) for i, s in enumerate(steps)]
        rollout = GroupRollout(
            samples=[s.answer for s in steps],
            rewards=torch.tensor([s.reward for s in steps], dtype=torch.float64),
            log_probs=torch.tensor([s.answer.log_prob for s in steps], dtype=torch.float64),
            values=torch.zeros(len(steps), dtype=torch.float64),
            invalid=torch.tensor([s.action.invalid for s in steps], dtype=torch.bool),
            terminated=torch.tensor([s.terminated for s in steps], dtype=torch.bool),
            truncated=torch.tensor(truncated, dtype=torch.bool),
            group=torch.tensor([s.slot // self.group_size for s in steps], dtype=torch.long),
            trajectory=torch.tensor([s.slot for s in steps], dtype=torch.long),
            step=torch.tensor([record["index"] for record in records], dtype=torch.long),
            state_keys=[state_key(s.agent_input) for s in steps],
        )
        self.round += 1
        stats.generation_seconds = self.engine.generation_seconds - seconds_before
        stats.generated_tokens = self.engine.usage().completion_tokens - tokens_before
        stats.seconds = time.perf_counter() - started
        return rollout, stats

    def state_dict(self) -> dict[str, Any]:
        """The round counter: rounds share nothing else."""
        return {"format": GROUP_STATE_FORMAT, "env_id": self.env_id, "env_kwargs": self.env_kwargs,
                "round": self.round, "num_envs": self.num_envs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("format") != GROUP_STATE_FORMAT:
            found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
            raise EnvStateError(f"environment state has format {found!r}, this run reads {GROUP_STATE_FORMAT}")
        if state.get("num_envs") != self.num_envs:
            raise EnvStateError(f"checkpoint played {state.get('num_envs')} environments per round, this run "
                                f"{self.num_envs}; resume with the same num_envs and group_size")
        self.round = int(state["round"])

    def close(self) -> None:
        for env in self.envs:
            env.close()
