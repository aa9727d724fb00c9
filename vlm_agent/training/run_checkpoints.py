"""A training run's checkpoints: what the trainer saves each `save_every` updates and restores on
`--resume` (trainable weights, value head, optimizer, RNG states, the environments' episodes as
data, counters), on top of the atomic, hash-checked files of :mod:`vlm_agent.training.checkpoint`.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlm_agent.rollout.env_state import EnvStateError
from vlm_agent.training.checkpoint import (
    CheckpointError,
    capture_rng_state,
    check_compatible,
    check_same_model,
    load_checkpoint,
    model_fingerprint,
    restore_rng_state,
    save_checkpoint,
)
from vlm_agent.training.interrupts import TrainingInterrupted
from vlm_agent.training.run_config import run_record, same_model
from vlm_agent.training.run_logs import truncate_metrics

#: Config fields that must match between a checkpoint and the run resuming it (the model is
#: compared as a path, see `same_model`). `vlm-agent train --resume` refuses more: see
#: `vlm_agent.training.run_config.RESUME_OVERRIDABLE`.
RESUME_KEYS = [
    "tiny_arch", "env_id", "num_envs", "num_steps", "use_lora", "lora_r", "lora_alpha",
    "lora_target_modules", "use_cot", "show_state", "seed", "env_kwargs", "algorithm", "group_size", "history_steps",
]


@dataclass
class ResumePoint:
    """What a checkpoint of the last complete update holds besides weights and optimizer: the
    environments' episodes and the RNG states, taken before the next rollout changes them."""

    update: int
    global_step: int
    collector: dict[str, Any]
    rng: dict[str, Any]
    torch_rng: dict[str, Any]


class RunCheckpoints:
    """The checkpoint half of :class:`vlm_agent.training.ppo_trainer.VLMPPOTrainer` (a mixin: it reads
    the trainer's policy, optimizer, collector, RNG, counters and process layout)."""

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {
            name: parameter.detach().cpu().clone()
            for name, parameter in self.policy.model.named_parameters()
            if parameter.requires_grad
        }

    def save_policy(self, directory: str | Path) -> Path:
        """`VLMPolicy.save_pretrained` plus the prompt, sampling and invalid-answer settings of this run
        (`agent_settings.json`), so that `vlm-agent eval` plays the policy as it was trained."""
        from vlm_agent.agents.settings import write_agent_settings

        directory = self.policy.save_pretrained(directory, base_within=self.run_dir)
        write_agent_settings(directory, self.config.agent_settings())
        return Path(directory)

    def resume_point(self) -> ResumePoint:
        """The environments' and RNGs' state now, between two updates (cheap: JSON data and RNG states)."""
        json_rng, tensor_rng = capture_rng_state(self.rng)
        return ResumePoint(self.update, self.global_step, self.collector.state_dict(), json_rng, tensor_rng)

    def save_checkpoint(self, resume_point: ResumePoint | None = None) -> Path | None:
        """Write checkpoint `update` atomically (main process); every process contributes its envs.

        The environments go into `state.json` as data (`RolloutCollector.state_dict`: how each
        episode started and its actions, replayed on resume), never as a pickle. `resume_point`:
        the environments and RNGs as they were at the end of the last update (a rollout that was
        abandoned since has moved them on; the weights and the optimizer have not moved).
        """
        point = resume_point or self.resume_point()
        local = {"collector": point.collector, "rng": point.rng, "torch_rng": point.torch_rng}
        if self.world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, local)
        else:
            gathered = [local]
        path = None
        if self.is_main:
            path = save_checkpoint(
                self.run_dir,
                point.update,
                state={
                    "update": point.update,
                    "global_step": point.global_step,
                    "world_size": self.world_size,
                    "config": run_record(self.config, self.run_dir),
                    "base_model": self.base_model_fingerprint,
                    "rng": [item["rng"] for item in gathered],
                    "environments": [item["collector"] for item in gathered],
                },
                tensors={
                    "trainable": self._trainable_state(),
                    "value_head": self.policy.value_head.state_dict() if self.policy.value_head is not None else {},
                    "optimizer": self.optimizer.state_dict(),
                    "torch_rng": [item["torch_rng"] for item in gathered],
                },
                export=self.save_policy,
            )
            self.saved_checkpoint = (point.update, path)
        self.accelerator.wait_for_everyone()
        return path

    def stopped(self, signum: int, resume_point: ResumePoint | None) -> TrainingInterrupted:
        """After a stop signal: the last complete update saved (unless it already is), as the
        exception that tells the command where it is (`vlm_agent.training.interrupts`).
        `resume_point`: the state before the rollout that the signal abandoned; None when the
        update in progress was finished."""
        saved_update, path = self.saved_checkpoint
        if saved_update != self.update:
            path = self.save_checkpoint(resume_point)
        return TrainingInterrupted(signum, run_dir=self.run_dir, checkpoint=path, completed_updates=self.update,
                                   num_updates=self.num_updates, finished=resume_point is None)

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore weights, optimizer, RNGs, environments and counters from a checkpoint or run dir."""
        checkpoint = load_checkpoint(path)
        # Checkpoints from before --algorithm were PPO runs.
        saved_config = {"algorithm": "ppo", "group_size": 8, **checkpoint.state.get("config", {})}
        check_compatible(saved_config, self.config.to_dict(), RESUME_KEYS)
        if not same_model(saved_config.get("model_name_or_path"), self.config.model_name_or_path, self.run_dir):
            check_compatible(saved_config, run_record(self.config, self.run_dir), ["model_name_or_path"])
        check_same_model(checkpoint.state.get("base_model"), self.base_model_fingerprint, self.config.model_name_or_path)
        if checkpoint.state.get("world_size") != self.world_size:
            raise CheckpointError(
                f"{checkpoint.path} was written by {checkpoint.state.get('world_size')} processes, this run has "
                f"{self.world_size}; resume with the same number of processes"
            )
        trainable = checkpoint.tensors["trainable"]
        expected = set(self._trainable_state())
        if set(trainable) != expected:
            missing = sorted(expected - set(trainable))[:3]
            unexpected = sorted(set(trainable) - expected)[:3]
            raise CheckpointError(
                f"{checkpoint.path} does not match this model's trainable parameters (missing {missing}, unexpected "
                f"{unexpected}); resume with the same model and LoRA settings"
            )
        with torch.no_grad():
            for name, parameter in self.policy.model.named_parameters():
                if name in trainable:
                    parameter.copy_(trainable[name].to(parameter.device, parameter.dtype))
        if self.policy.value_head is not None:
            self.policy.value_head.load_state_dict(checkpoint.tensors["value_head"])
        self.optimizer.load_state_dict(checkpoint.tensors["optimizer"])
        if "environments" not in checkpoint.state:
            raise CheckpointError(
                f"{checkpoint.path} holds no environment state (it predates env state as data); start a new run"
            )
        try:
            self.collector.load_state_dict(checkpoint.state["environments"][self.rank])
        except EnvStateError as error:
            raise CheckpointError(f"{checkpoint.path}: {error}") from error
        update = int(checkpoint.state["update"])
        if update > self.num_updates:
            raise CheckpointError(
                f"{checkpoint.path} holds {update} updates ({checkpoint.state['global_step']} steps), more than the "
                f"{self.num_updates} of total_timesteps={self.config.total_timesteps}; resume with --total_timesteps "
                f"{checkpoint.state['global_step']} or more"
            )
        restore_rng_state(checkpoint.state["rng"][self.rank], checkpoint.tensors["torch_rng"][self.rank], self.rng)
        self.update = update
        self.global_step = int(checkpoint.state["global_step"])
        self.saved_checkpoint = (self.update, checkpoint.path)
        if self.is_main:
            # A run killed after logging an update it never checkpointed logs that update again.
            self.history = truncate_metrics(self.run_dir, self.update)
            note = f"Resuming from {checkpoint.path} (update {self.update})"
            if checkpoint.skipped:
                note += "; passed over newer damaged checkpoints, left as they are: " + "; ".join(checkpoint.skipped)
            print(note, file=sys.stderr)

    @functools.cached_property
    def base_model_fingerprint(self) -> dict[str, str] | None:
        """`model_fingerprint` of `config.model_name_or_path`, recorded in checkpoints and checked on resume."""
        path = self.config.model_name_or_path
        return model_fingerprint(path) if path else None


