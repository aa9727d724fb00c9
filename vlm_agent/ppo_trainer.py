"""PPO fine-tuning of a vision-language model as a decision-making agent (RL4VLM).

One update = collect `num_steps` steps in each environment (batched generation), compute GAE
over environment steps, then `ppo_epochs` passes of clipped-surrogate + clipped-value updates in
mini-batches with gradient accumulation. The per-update loop reads top to bottom in
`VLMPPOTrainer.train` and `VLMPPOTrainer.ppo_update`; the arithmetic is in `vlm_agent.ppo_math`.

Determinism: every dropout module of the policy is switched off when the trainer is built
(`disable_dropout`, as TRL's RL trainers do). The update's forward runs in train mode (gradient
checkpointing only acts in train mode) while acting runs in eval mode; with dropout on (the
default `lora_dropout` 0.05) the two would score the same answer differently, and PPO's ratio
would measure dropout noise instead of the policy's change.

Data parallel: under `accelerate launch` (or `torchrun`), each process runs its own environments
(seeded by rank) and its own rollouts. Gradient accumulation is ours: each mini-batch's loss is
scaled by 1 / (mini-batches in its accumulation group) and back-propagated, then the summed
gradients are averaged across processes in one flattened all-reduce before the optimizer step
(so the policy's forward needs no DDP wrapper). Decisions that change the control flow (the
`target_kl` early stop) are taken on values all-reduced across processes, so every process runs
the same collectives in the same order.

DeepSpeed (`vlm_agent/configs/accelerate_deepspeed_zero2.yaml`, ZeRO-2): the model, value head and
optimizer go through `accelerator.prepare`, and accumulation is accelerate's: each mini-batch's
`accelerator.backward(loss)` runs inside `accelerator.accumulate(engine)`, which marks only the
last mini-batch of each group of `gradient_accumulation_steps` a boundary; DeepSpeed scales the
loss by 1 / gradient_accumulation_steps itself (we do not scale it again), averages, clips and
steps there. This needs every accumulation group full (the mini-batches per epoch a multiple of
`gradient_accumulation_steps`) and the DeepSpeed config's `gradient_accumulation_steps` equal to
ours; both are checked when the trainer is built. deepspeed is not a dependency and this path is
not exercised by the test suite.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlm_agent.checkpoint import (
    CheckpointError,
    RunExistsError,
    capture_rng_state,
    check_compatible,
    check_same_model,
    latest_checkpoint,
    load_checkpoint,
    model_fingerprint,
    restore_rng_state,
    save_checkpoint,
)
from vlm_agent.environments import check_env
from vlm_agent.parsing import InvalidActionPolicy
from vlm_agent.policy import GenerationSettings, VLMPolicy
from vlm_agent.ppo_config import VLMPPOConfig
from vlm_agent.ppo_math import (
    clipped_policy_loss,
    clipped_value_loss,
    compute_gae,
    explained_variance,
    kl_to_reference,
    normalize_advantages,
    scheduled_learning_rate,
)
from vlm_agent.env_state import EnvStateError
from vlm_agent.rollout import Rollout, RolloutCollector, RolloutStats

#: Config fields that must match between a checkpoint and the run resuming it.
RESUME_KEYS = [
    "model_name_or_path", "tiny_arch", "env_id", "num_envs", "num_steps", "use_lora", "lora_r", "lora_alpha",
    "lora_target_modules", "use_cot", "show_state", "seed", "env_kwargs",
]
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
SAMPLES_JSONL = "samples.jsonl"
LEARNING_CURVE_PNG = "learning_curve.png"


def default_run_dir(config: VLMPPOConfig) -> Path:
    """`runs/<env>__<exp_name>__<seed>__<unix time>`, as CleanRL names runs."""
    env_name = config.env_id.rsplit("/", 1)[-1]
    return Path("runs") / f"{env_name}__{config.exp_name}__{config.seed}__{int(time.time())}"


class VLMPPOTrainer:
    r"""PPO trainer for a [`~vlm_agent.policy.VLMPolicy`] on a Gymnasium environment with image observations.

    Example (CPU, about a minute; a random tiny model gets no reward, so warm-start it by SFT
    first for learning, as `vlm-agent train` does):

    ```python
    from vlm_agent.ppo_config import VLMPPOConfig
    from vlm_agent.ppo_trainer import VLMPPOTrainer
    from vlm_agent.tiny_models import make_tiny_model

    model_dir = make_tiny_model("qwen2_vl", "/tmp/tiny_qwen", seed=0)
    config = VLMPPOConfig(model_name_or_path=str(model_dir), num_envs=4, num_steps=4, total_timesteps=32,
                          max_new_tokens=24, mini_batch_size=4, gradient_accumulation_steps=1,
                          lora_r=8, lora_alpha=16, output_dir="/tmp/ppo_run")
    run_dir = VLMPPOTrainer(config).train()
    ```

    Args:
        config: The run's settings.
        policy: An already built policy; by default one is loaded from `config.model_name_or_path`.
        run_dir: Where metrics, samples, checkpoints and the final policy go; default
            `config.output_dir`, else `default_run_dir(config)`.
    """

    def __init__(self, config: VLMPPOConfig, policy: VLMPolicy | None = None, run_dir: str | Path | None = None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        from vlm_agent.models import ModelSettings
        from vlm_agent.prompts import prompt_for

        self.config = config
        check_env(config.env_id, config.env_kwargs)  # before any model is built
        self.run_dir = Path(run_dir or config.output_dir or default_run_dir(config))
        # The accumulation count only matters under DeepSpeed (see the module docstring); elsewhere
        # the trainer scales and steps itself and never calls accelerator.backward.
        self.accelerator = Accelerator(
            cpu=config.device == "cpu",
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            log_with=config.report_targets or None,
            # TensorBoard events go to run_dir/tensorboard/<project name>.
            project_config=ProjectConfiguration(project_dir=str(self.run_dir), logging_dir=str(self.run_dir / "tensorboard")),
        )
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.uses_deepspeed = self.accelerator.distributed_type.value == "DEEPSPEED"
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        # What --seed promises: Python's, numpy's and torch's global generators (offset by rank).
        random.seed(config.seed + self.rank)
        np.random.seed(config.seed + self.rank)
        torch.manual_seed(config.seed + self.rank)

        if policy is None:
            if config.model_name_or_path is None:
                raise ValueError(
                    "VLMPPOTrainer needs a model: set model_name_or_path, or use vlm_agent.ppo_trainer.train(config), "
                    "which builds and warm-starts the tiny model when none is given"
                )
            device = str(self.accelerator.device) if config.device == "auto" else config.device
            model_settings = ModelSettings(
                model_name_or_path=config.model_name_or_path,
                dtype=config.dtype,
                device=device,
                use_lora=config.use_lora,
                lora_r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                lora_target_modules=_target_modules(config.lora_target_modules),
                gradient_checkpointing=config.gradient_checkpointing,
            )
            settings = GenerationSettings(
                temperature=config.temperature,
                max_new_tokens=config.max_new_tokens,
                cot_scale=config.cot_scale,
                kv_cache=config.kv_cache,
            )
            policy = VLMPolicy.from_model(model_settings, settings, seed=config.seed)
        self.policy = policy
        disable_dropout(policy.model)
        disable_dropout(policy.value_head)
        if config.language_only:
            from vlm_agent.alignment import language_parameters, train_only

            train_only(policy.model, language_parameters(policy.model))
        if config.kl_coef > 0 and not policy.has_adapter:
            raise ValueError(
                "kl_coef > 0 needs LoRA adapters (the reference policy is the model with adapters disabled); "
                "set use_lora=True or kl_coef=0"
            )

        model_parameters = [p for p in policy.model.parameters() if p.requires_grad]
        if not model_parameters:
            raise ValueError("the model has no trainable parameters; use LoRA (use_lora=True) or unfreeze weights")
        value_lr = config.value_head_learning_rate or config.learning_rate
        self.optimizer = torch.optim.AdamW(
            [
                {"params": model_parameters, "lr": config.learning_rate, "base_lr": config.learning_rate},
                {"params": list(policy.value_head.parameters()), "lr": value_lr, "base_lr": value_lr},
            ],
            eps=config.adam_epsilon,
            weight_decay=config.weight_decay,
        )
        if self.uses_deepspeed:
            mini_batches = config.num_steps * config.num_envs // config.mini_batch_size
            if mini_batches % config.gradient_accumulation_steps:
                raise ValueError(
                    f"with DeepSpeed, the {mini_batches} mini-batches per epoch must fill whole accumulation groups of "
                    f"gradient_accumulation_steps={config.gradient_accumulation_steps} (DeepSpeed scales every "
                    "micro-batch by 1/gradient_accumulation_steps); choose a divisor"
                )
            # No dataloader tells DeepSpeed the micro-batch size; it is the PPO mini-batch.
            self.accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
                config.mini_batch_size
            )
            modules = torch.nn.ModuleDict({"model": policy.model, "value_head": policy.value_head})
            self._deepspeed_engine, self.optimizer = self.accelerator.prepare(modules, self.optimizer)
            if self.accelerator.gradient_accumulation_steps != config.gradient_accumulation_steps:
                raise ValueError(
                    f"the DeepSpeed config accumulates {self.accelerator.gradient_accumulation_steps} micro-batches but "
                    f"gradient_accumulation_steps={config.gradient_accumulation_steps}; set gradient_accumulation_steps "
                    "in the accelerate/DeepSpeed config to the same value (or to auto)"
                )

        self.rng = np.random.default_rng([config.seed, self.rank])
        invalid_policy = InvalidActionPolicy(
            mode=config.invalid_action, fallback=config.invalid_action_fallback, penalty=config.invalid_action_penalty
        )
        self.collector = RolloutCollector(
            config.env_id,
            config.num_envs,
            seed=config.seed + self.rank * config.num_envs,
            policy=policy,
            prompt_template=prompt_for(config.env_id, cot=config.use_cot, show_state=config.show_state),
            invalid_policy=invalid_policy,
            rng=self.rng,
            env_kwargs=config.env_kwargs,
        )
        self.num_updates = config.num_updates(self.world_size)
        self.update = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self._trackers_open = False

    # ------------------------------------------------------------------ the loop
    def train(self, max_updates: int | None = None) -> Path:
        """Run (or continue, with `config.resume`) the training; return the run directory.

        Args:
            max_updates: Stop after this many updates in this call (a time-sliced job, or a test
                of resuming); the run continues later with `resume=True`. None: run to the end.
        """
        from tqdm.auto import tqdm

        config = self.config
        if not config.resume and (self.run_dir / METRICS_JSONL).exists():
            if latest_checkpoint(self.run_dir) is None:
                raise RunExistsError(
                    f"{self.run_dir} already holds a run (metrics.jsonl) but no complete checkpoint to continue it "
                    f"from; choose another --output_dir, or move {self.run_dir} away to start it over"
                )
            raise RunExistsError(
                f"{self.run_dir} already holds a run (metrics.jsonl); pass --resume to continue it, or choose "
                "another --output_dir"
            )
        self.base_model_fingerprint  # noqa: B018 - hash the model we start from before it can change
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
        if config.resume:
            self.load_checkpoint(self.run_dir)
        self._open_loggers()
        steps_per_update = config.rollout_size(self.world_size)
        bar = tqdm(
            total=self.num_updates * steps_per_update,
            initial=self.global_step,
            unit="step",
            desc=f"PPO {config.env_id}",
            disable=not (config.progress_bar and self.is_main),
        )
        stop_at = self.num_updates if max_updates is None else min(self.num_updates, self.update + max_updates)
        try:
            while self.update < stop_at:
                started = time.perf_counter()
                learning_rate = self._set_learning_rate(self.update)
                self.policy.eval()
                rollout, stats = self.collector.collect(
                    config.num_steps,
                    log_samples=config.log_samples if self.is_main else 0,
                    on_step=lambda n: bar.update(n * self.world_size),
                )
                losses = self.ppo_update(rollout)
                self.update += 1
                self.global_step += steps_per_update
                metrics = self._metrics(rollout, stats, losses, learning_rate, time.perf_counter() - started)
                self._log(metrics, stats.sample_logs)
                bar.set_postfix(
                    success=f"{metrics['charts/success_rate']:.2f}", invalid=f"{metrics['charts/invalid_action_rate']:.2f}"
                )
                if self.update % config.save_every == 0 or self.update in (self.num_updates, stop_at):
                    self.save_checkpoint()
        finally:
            bar.close()
            self._close_loggers()
        if self.is_main and self.update == self.num_updates:
            self.save_policy(self.run_dir / "policy")
            plot_learning_curve(self.run_dir / METRICS_JSONL, self.run_dir / LEARNING_CURVE_PNG, title=config.env_id)
        self.accelerator.wait_for_everyone()
        self.collector.close()
        return self.run_dir

    def _set_learning_rate(self, update: int) -> float:
        config = self.config
        for group in self.optimizer.param_groups:
            base = group.get("base_lr", config.learning_rate)
            minimum = config.min_learning_rate * base / config.learning_rate
            group["lr"] = scheduled_learning_rate(config.lr_scheduler, update, self.num_updates, base, minimum)
        return self.optimizer.param_groups[0]["lr"]

    def ppo_update(self, rollout: Rollout) -> dict[str, float]:
        """GAE over the rollout, then `ppo_epochs` epochs of clipped PPO on shuffled mini-batches.

        Returns mean losses and statistics over all mini-batches of the update.
        """
        config = self.config
        advantages, returns = compute_gae(
            rollout.rewards,
            rollout.values,
            rollout.next_values,
            rollout.terminated,
            rollout.truncated,
            gamma=config.gamma,
            gae_lambda=config.gae_lambda,
        )
        samples = rollout.flat_samples()
        advantages = advantages.reshape(-1)
        returns = returns.reshape(-1)
        if config.normalize_advantages:
            advantages = normalize_advantages(advantages)
        old_log_probs = rollout.log_probs.reshape(-1)
        old_values = rollout.values.reshape(-1)

        size = len(samples)
        batch = config.mini_batch_size
        totals: dict[str, float] = {}
        count = 0
        self.policy.train()
        epochs_run = 0
        for _ in range(config.ppo_epochs):
            order = self.rng.permutation(size)
            mini_batches = [order[start : start + batch] for start in range(0, size, batch)]
            groups = [
                mini_batches[start : start + config.gradient_accumulation_steps]
                for start in range(0, len(mini_batches), config.gradient_accumulation_steps)
            ]
            epoch_kl = []
            for group in groups:
                for indices in group:
                    index = torch.as_tensor(indices)
                    stats = self._loss_and_backward(
                        [samples[i] for i in indices],
                        old_log_probs[index],
                        old_values[index],
                        advantages[index],
                        returns[index],
                        scale=1.0 / len(group),
                    )
                    for name, value in stats.items():
                        totals[name] = totals.get(name, 0.0) + value
                    count += 1
                    epoch_kl.append(stats["losses/approx_kl"])
                totals["losses/grad_norm"] = totals.get("losses/grad_norm", 0.0) + self._optimizer_step() * len(group)
            epochs_run += 1
            if config.target_kl is not None:
                # One decision for all processes: each leaving the loop on its own KL would leave the
                # others waiting in (or mismatching) the next gradient all-reduce.
                mean_kl = self._mean_across_processes(float(np.mean(epoch_kl)))
                if mean_kl > config.target_kl:
                    break
        means = {name: value / max(count, 1) for name, value in totals.items()}
        means["losses/explained_variance"] = explained_variance(old_values, returns)
        means["losses/ppo_epochs_run"] = float(epochs_run)
        means["losses/advantage_std"] = float(advantages.std()) if size > 1 else 0.0
        self.policy.eval()
        return means

    def _loss_and_backward(
        self,
        samples: list[Any],
        old_log_probs: torch.Tensor,
        old_values: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        *,
        scale: float,
    ) -> dict[str, float]:
        config = self.config
        out = self.policy.evaluate(samples, with_reference=config.kl_coef > 0)
        device, dtype = out.log_probs.device, out.log_probs.dtype
        old_log_probs = old_log_probs.to(device, dtype)
        advantages = advantages.to(device, dtype)
        policy_loss, clip_fraction, approx_kl = clipped_policy_loss(
            out.log_probs, old_log_probs, advantages, config.clip_range
        )
        values = out.values.float()
        value_loss = clipped_value_loss(
            values, old_values.to(device, values.dtype), returns.to(device, values.dtype), config.clip_range_value
        )
        entropy = out.entropy.mean()
        loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
        kl = torch.zeros((), device=device)
        if config.kl_coef > 0:
            kl = kl_to_reference(out.log_probs, out.ref_log_probs.to(dtype)).mean()
            loss = loss + config.kl_coef * kl
        if self.uses_deepspeed:
            # accelerate marks the group's last micro-batch the boundary; DeepSpeed scales by
            # 1/gradient_accumulation_steps itself, so `scale` (the same factor) is not applied again.
            with self.accelerator.accumulate(self._deepspeed_engine):
                self.accelerator.backward(loss)
        else:
            (loss * scale).backward()
        return {
            "losses/policy_loss": float(policy_loss.detach()),
            "losses/value_loss": float(value_loss.detach()),
            "losses/entropy": float(entropy.detach()),
            "losses/kl_to_reference": float(kl.detach()),
            "losses/approx_kl": float(approx_kl),
            "losses/clip_fraction": float(clip_fraction),
            "losses/ratio": float(torch.exp(out.log_probs.detach() - old_log_probs).mean()),
        }

    def _optimizer_step(self) -> float:
        """Average gradients across processes, clip them, step; returns the pre-clip gradient norm."""
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.uses_deepspeed:
            # DeepSpeed stepped (and zeroed) inside accelerator.backward at the group's boundary;
            # the wrapped optimizer's step and zero_grad are no-ops there.
            self.optimizer.step()
            self.optimizer.zero_grad()
            return float("nan")
        if self.world_size > 1:
            average_gradients_across_processes(parameters, self.world_size)
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    # ------------------------------------------------------------------ metrics and logs
    def _metrics(
        self, rollout: Rollout, stats: RolloutStats, losses: dict[str, float], learning_rate: float, seconds: float
    ) -> dict[str, Any]:
        episodes = stats.episodes
        local = torch.tensor(
            [
                len(episodes),
                sum(e.success for e in episodes),
                sum(e.episode_return for e in episodes),
                sum(e.length for e in episodes),
                float(rollout.invalid.sum()),
                float(rollout.invalid.numel()),
                float(stats.generated_tokens),
                stats.generation_seconds,
                float(rollout.rewards.sum()),
            ],
            dtype=torch.float64,
        )
        totals = self._sum_across_processes(local)
        (n_episodes, successes, return_sum, length_sum, invalid, steps, tokens, generation_seconds, reward_sum) = (
            totals.tolist()
        )
        nan = float("nan")
        metrics: dict[str, Any] = {
            "update": self.update,
            "global_step": self.global_step,
            "charts/episodes": int(n_episodes),
            "charts/success_rate": successes / n_episodes if n_episodes else nan,
            "charts/episode_return": return_sum / n_episodes if n_episodes else nan,
            "charts/episode_length": length_sum / n_episodes if n_episodes else nan,
            "charts/mean_step_reward": reward_sum / steps if steps else nan,
            "charts/invalid_action_rate": invalid / steps if steps else nan,
            "charts/learning_rate": learning_rate,
            "perf/tokens_per_second": tokens / generation_seconds if generation_seconds else nan,
            "perf/env_steps_per_second": steps / seconds if seconds else nan,
            "perf/update_seconds": seconds,
        }
        metrics.update(losses)
        return metrics

    def _mean_across_processes(self, value: float) -> float:
        """The mean of `value` over all processes (the value itself with one process)."""
        if self.world_size == 1:
            return value
        total = self._sum_across_processes(torch.tensor([value], dtype=torch.float64))
        return float(total[0]) / self.world_size

    def _sum_across_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return tensor
        import torch.distributed as dist

        reduced = tensor.to(self.accelerator.device)
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced.cpu()

    def _open_loggers(self) -> None:
        """Start accelerate's trackers for `report_to` (tensorboard -> `run_dir/tensorboard/vlm-agent`,
        wandb -> project "vlm-agent", run named after the run directory)."""
        if not self.config.report_targets:
            return
        if "wandb" in self.config.report_targets:
            try:
                import wandb  # noqa: F401
            except ImportError as error:
                raise ImportError("report_to=wandb needs the wandb package: pip install wandb") from error
        # TensorBoard's hparams take only numbers, text and booleans; None becomes "None".
        hyperparameters = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in self.config.to_dict().items()}
        self.accelerator.init_trackers(
            "vlm-agent",  # the wandb project; the TensorBoard subfolder of run_dir/tensorboard
            config=hyperparameters,
            init_kwargs={"wandb": {"name": self.run_dir.name, "dir": str(self.run_dir)}},
        )
        self._trackers_open = True

    def _close_loggers(self) -> None:
        if self._trackers_open:
            self.accelerator.end_training()
            self._trackers_open = False

    def _log(self, metrics: dict[str, Any], sample_logs: list[dict[str, Any]]) -> None:
        self.history.append(metrics)
        if not self.is_main:
            return
        with open(self.run_dir / METRICS_JSONL, "a") as handle:
            handle.write(json.dumps(metrics) + "\n")
        _append_csv(self.run_dir / METRICS_CSV, metrics)
        if sample_logs:
            with open(self.run_dir / SAMPLES_JSONL, "a") as handle:
                for record in sample_logs:
                    handle.write(json.dumps({"update": self.update, **record}) + "\n")
        if self._trackers_open:
            numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and "/" in k}
            self.accelerator.log(numbers, step=self.global_step)

    # ------------------------------------------------------------------ checkpoints
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {
            name: parameter.detach().cpu().clone()
            for name, parameter in self.policy.model.named_parameters()
            if parameter.requires_grad
        }

    def save_policy(self, directory: str | Path) -> Path:
        """`VLMPolicy.save_pretrained` plus the prompt, sampling and invalid-answer settings of this run
        (`agent_settings.json`), so that `vlm-agent eval` plays the policy as it was trained."""
        from vlm_agent.agents import AgentSettings, write_agent_settings

        directory = self.policy.save_pretrained(directory)
        write_agent_settings(directory, AgentSettings.from_ppo_config(self.config))
        return Path(directory)

    def save_checkpoint(self) -> Path | None:
        """Write checkpoint `update` atomically (main process); every process contributes its envs.

        The environments go into `state.json` as data (`RolloutCollector.state_dict`: how each
        episode started and its actions, replayed on resume), never as a pickle.
        """
        collector_state = self.collector.state_dict()
        json_rng, tensor_rng = capture_rng_state(self.rng)
        if self.world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, {"collector": collector_state, "rng": json_rng, "torch_rng": tensor_rng})
        else:
            gathered = [{"collector": collector_state, "rng": json_rng, "torch_rng": tensor_rng}]
        path = None
        if self.is_main:
            path = save_checkpoint(
                self.run_dir,
                self.update,
                state={
                    "update": self.update,
                    "global_step": self.global_step,
                    "world_size": self.world_size,
                    "config": self.config.to_dict(),
                    "base_model": self.base_model_fingerprint,
                    "rng": [item["rng"] for item in gathered],
                    "environments": [item["collector"] for item in gathered],
                },
                tensors={
                    "trainable": self._trainable_state(),
                    "value_head": self.policy.value_head.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "torch_rng": [item["torch_rng"] for item in gathered],
                },
                export=self.save_policy,
            )
        self.accelerator.wait_for_everyone()
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore weights, optimizer, RNGs, environments and counters from a checkpoint or run dir."""
        checkpoint = load_checkpoint(path)
        saved_config = checkpoint.state.get("config", {})
        check_compatible(saved_config, self.config.to_dict(), RESUME_KEYS)
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
        restore_rng_state(checkpoint.state["rng"][self.rank], checkpoint.tensors["torch_rng"][self.rank], self.rng)
        self.update = int(checkpoint.state["update"])
        self.global_step = int(checkpoint.state["global_step"])
        if self.is_main:
            # A run killed after logging an update it never checkpointed logs that update again.
            self.history = _truncate_metrics(self.run_dir, self.update)
            note = f"Resuming from {checkpoint.path} (update {self.update})"
            if checkpoint.skipped:
                note += "; passed over newer damaged checkpoints, left as they are: " + "; ".join(checkpoint.skipped)
            print(note, file=sys.stderr)

    @functools.cached_property
    def base_model_fingerprint(self) -> dict[str, str] | None:
        """`model_fingerprint` of `config.model_name_or_path`, recorded in checkpoints and checked on resume."""
        path = self.config.model_name_or_path
        return model_fingerprint(path) if path else None


def disable_dropout(module: torch.nn.Module) -> None:
    """Set the probability of every `torch.nn.Dropout` in `module` to 0 (as TRL's RL trainers do).

    PPO compares the log-prob of an answer when it was sampled (eval mode) with the log-prob the
    update's forward gives it (train mode); any dropout makes that ratio noise. Modules that read a
    dropout rate from the model config instead (e.g. `attention_dropout`) are 0 in every supported
    architecture's published config; the test suite checks train-mode and eval-mode scores agree.
    """
    for layer in module.modules():
        if isinstance(layer, torch.nn.Dropout):
            layer.p = 0.0


def average_gradients_across_processes(parameters: list[torch.nn.Parameter], world_size: int) -> None:
    """Replace each gradient with its mean over the processes, in one flattened all-reduce.

    One collective over one buffer instead of one per parameter (hundreds for LoRA on every linear
    layer); a parameter without a gradient on this process contributes zeros, so every process
    sends the same layout.
    """
    import torch.distributed as dist

    if not parameters:
        return
    gradients = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in gradients])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for parameter, gradient in zip(parameters, gradients, strict=True):
        size = gradient.numel()
        parameter.grad = flat[offset : offset + size].view_as(parameter).to(parameter.dtype)
        offset += size


def _target_modules(text: str) -> str | list[str]:
    return text if text == "all-linear" else [name.strip() for name in text.split(",") if name.strip()]


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    exists = path.is_file()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if not exists:
            writer.writeheader()
        writer.writerow(row)


def _truncate_metrics(run_dir: Path, update: int) -> list[dict[str, Any]]:
    """Keep only metrics rows of updates <= `update` in the JSONL and CSV logs; return them."""
    jsonl = run_dir / METRICS_JSONL
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()] if jsonl.is_file() else []
    rows = [row for row in rows if row["update"] <= update]
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    csv_path = run_dir / METRICS_CSV
    if csv_path.exists():
        csv_path.unlink()
    for row in rows:
        _append_csv(csv_path, row)
    samples = run_dir / SAMPLES_JSONL
    if samples.is_file():
        kept = [line for line in samples.read_text().splitlines() if line.strip() and json.loads(line)["update"] <= update]
        samples.write_text("".join(line + "\n" for line in kept))
    return rows


def running_success(rows: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """Cumulative (episodes, successes) after each update, from the per-update metrics rows.

    An update's `charts/success_rate` counts only the episodes that happened to end inside its
    rollout (a handful, and the short ones first), so per-update rates swing widely; the running
    rate over every completed episode so far, with its count, is what the learning curve shows.
    """
    episodes, successes, total_episodes, total_successes = [], [], 0, 0
    for row in rows:
        count = int(row.get("charts/episodes", 0) or 0)
        rate = row.get("charts/success_rate")
        if count and rate is not None and rate == rate:  # NaN when no episode ended
            total_episodes += count
            total_successes += int(round(rate * count))
        episodes.append(total_episodes)
        successes.append(total_successes)
    return episodes, successes


def plot_learning_curve(
    metrics_path: str | Path, png_path: str | Path, title: str = "", levels: dict[str, float] | None = None
) -> Path:
    """Learning curve (PNG): running success rate, episode return, invalid-answer rate, value loss.

    The success panel shows the running rate over all completed training episodes with its Wilson
    95% band and the episode count, and `levels` (e.g. held-out success of random play, the warm
    start, the trained policy and the expert, as fractions) as labelled horizontal lines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vlm_agent.evaluation import wilson_interval

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    steps = [row["global_step"] for row in rows]
    figure, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    success_axis = axes[0]
    episodes, successes = running_success(rows)
    shown = [(step, n, k) for step, n, k in zip(steps, episodes, successes) if n]
    if shown:
        xs = [step for step, _, _ in shown]
        rates = [100 * k / n for _, n, k in shown]
        bands = [wilson_interval(k, n) for _, n, k in shown]
        success_axis.plot(xs, rates, marker="o", markersize=3, color="C0", label="training episodes, running")
        success_axis.fill_between(xs, [100 * low for low, _ in bands], [100 * high for _, high in bands],
                                  color="C0", alpha=0.15, linewidth=0)
        labelled = sorted(set(range(0, len(shown), max(1, len(shown) // 6))) | {len(shown) - 1})
        for index in labelled:
            x, rate, n = xs[index], rates[index], shown[index][1]
            success_axis.annotate(f"n={n}", (x, rate), textcoords="offset points", xytext=(0, -12),
                                  ha="center", fontsize=7, color="C0")
    for index, (label, level) in enumerate((levels or {}).items()):
        success_axis.axhline(100 * level, linestyle="--", linewidth=1, color=f"C{index + 1}",
                             label=f"{label} (held out): {100 * level:.1f}%")
    success_axis.set_ylim(0, 105)
    success_axis.set_ylabel("success rate (%)")
    success_axis.set_title("success rate")
    if shown or levels:  # a run in which no episode ended yet has nothing to label
        success_axis.legend(fontsize=7, loc="lower right")
    panels = [
        (axes[1], "charts/episode_return", "mean episode return", "return"),
        (axes[2], "charts/invalid_action_rate", "invalid-answer rate", "share of steps"),
        (axes[3], "losses/value_loss", "value loss", "loss"),
    ]
    for axis, key, label, unit in panels:
        axis.plot(steps, [row.get(key, float("nan")) for row in rows], marker="o", markersize=3)
        axis.set_title(label + (" (per update)" if key.startswith("charts/") else ""))
        axis.set_ylabel(unit)
    for axis in axes:
        axis.set_xlabel("environment steps")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return Path(png_path)


def prepare_base_model(config: VLMPPOConfig, run_dir: Path) -> Path:
    """The model PPO starts from when none is given: the tiny model, warm-started by SFT.

    With `align_*_steps` the tiny model gets legible vision settings and is aligned to read the
    env's image first (`vlm_agent.alignment`, in `run_dir/aligned_model`); its SFT then trains
    the language model's layers alone, which keeps the reading (a whole-model SFT erased it).
    Built once per run directory (`run_dir/base_model`); a resumed run reuses it.
    """
    from vlm_agent.sft import VLMSFTConfig, run_sft
    from vlm_agent.tiny_models import make_tiny_model

    base_dir = run_dir / "base_model"
    done_marker = base_dir / "WARM_START_DONE"
    if done_marker.is_file():
        return base_dir
    if config.aligns_warm_start:
        from vlm_agent.alignment import run_alignment

        start = run_alignment(config.warm_start_alignment(str(run_dir / "aligned_model"))).model_dir
    else:
        start = make_tiny_model(config.tiny_arch, run_dir / "tiny_random_model", seed=config.seed)
    sft_config = VLMSFTConfig(
        model_name_or_path=str(start),
        env_id=config.env_id,
        env_kwargs=config.env_kwargs,
        num_demos=config.sft_num_demos,
        epochs=config.sft_epochs,
        learning_rate=config.sft_learning_rate,
        wrong_action_rate=config.sft_wrong_action_rate,
        use_cot=config.use_cot,
        show_state=config.show_state,
        seed=config.seed,
        output_dir=str(base_dir),
        progress_bar=config.progress_bar,
        language_only=config.aligns_warm_start,
    )
    run_sft(sft_config)
    from vlm_agent.agents import AgentSettings, write_agent_settings

    # The warm start is evaluated as the PPO run acts (prompt, answer length, invalid-answer rule).
    write_agent_settings(base_dir, AgentSettings.from_ppo_config(config))
    done_marker.write_text("SFT warm start complete\n")
    return base_dir


def train(config: VLMPPOConfig) -> Path:
    """What `vlm-agent train` runs: build/warm-start the tiny model when no model is given, then PPO."""
    if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
        # Small models on shared cores: one thread per process avoids oversubscription, which made
        # generation up to 100x slower on 2-core machines. VLM_AGENT_NUM_THREADS overrides it.
        torch.set_num_threads(int(os.environ.get("VLM_AGENT_NUM_THREADS", "1")))
    check_env(config.env_id, config.env_kwargs)  # before the warm start builds a model
    run_dir = Path(config.output_dir) if config.output_dir else default_run_dir(config)
    if config.resume and latest_checkpoint(run_dir) is None:
        if (run_dir / METRICS_JSONL).exists():  # "drop --resume" would be refused: the folder holds a run
            raise CheckpointError(
                f"--resume was given but {run_dir} holds no complete checkpoint; its damaged checkpoints are left as "
                f"they are: choose another --output_dir, or move {run_dir} away to start the run over"
            )
        raise CheckpointError(f"--resume was given but {run_dir} holds no complete checkpoint; drop --resume to start fresh")
    if config.model_name_or_path is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        base = prepare_base_model(config, run_dir)
        config = VLMPPOConfig(**{**asdict(config), "model_name_or_path": str(base)})
    return VLMPPOTrainer(config, run_dir=run_dir).train()
