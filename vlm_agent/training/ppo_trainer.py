"""PPO fine-tuning of a vision-language model as a decision-making agent (RL4VLM).

The trainer trains a given policy: build the policy -> the one loop (`vlm_agent.rollout.collector`) collects
`num_steps` steps in each environment (batched generation) -> the algorithm's update
(`vlm_agent.algorithms`: PPO's GAE over environment steps, then `ppo_epochs` passes of
clipped-surrogate + clipped-value updates in mini-batches with gradient accumulation) -> logs and
checkpoints (`vlm_agent.training.run_logs`, `vlm_agent.training.checkpoint`). The per-update loop
reads top to bottom in `VLMPPOTrainer.train` and `VLMPPOTrainer.ppo_update`; the arithmetic is in
`vlm_agent.algorithms.ppo`. The CPU demo's tiny warm start is not here: it is a recipe in
`vlm_agent.demo.warm_start` that ends by calling `train`.

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

DeepSpeed ZeRO-2: see `vlm_agent.training.optimizer`.

Stopping (one process): on SIGINT or SIGTERM the rollout in progress is abandoned (an update or a
save in progress finishes), the last complete update is saved and `TrainingInterrupted` is raised
(`vlm_agent.training.interrupts`); `--resume` continues with the interrupted update.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlm_agent.algorithms.base import MiniBatchScores
from vlm_agent.algorithms.group import GRPO, RLOO, GiGPO, anchor_share, informative_share
from vlm_agent.algorithms.ppo import (
    PPO,
    explained_variance,
)
from vlm_agent.models.freezing import disable_dropout
from vlm_agent.models.policy import VLMPolicy
from vlm_agent.models.settings import GenerationSettings
from vlm_agent.prompting.invalid_actions import InvalidActionPolicy
from vlm_agent.rollout.collector import Rollout, RolloutCollector, RolloutStats
from vlm_agent.rollout.environments import check_env
from vlm_agent.rollout.groups import GroupCollector, GroupRollout
from vlm_agent.training.checkpoint import (
    CheckpointError,
    RunExistsError,
    latest_checkpoint,
)
from vlm_agent.training.distributed import (
    mean_across_processes,
    sum_across_processes,
)
from vlm_agent.training.interrupts import Interrupted, SignalGuard
from vlm_agent.training.learning_curve import plot_learning_curve
from vlm_agent.training.optimizer import (
    build_optimizer,
    optimizer_step,
    prepare_deepspeed,
    set_learning_rate,
)
from vlm_agent.training.ppo_config import VLMPPOConfig
from vlm_agent.training.rollout_engines import advantage_weights, engine_metrics, make_rollout_engine
from vlm_agent.training.run_checkpoints import RunCheckpoints
from vlm_agent.training.run_config import write_run_config
from vlm_agent.training.run_logs import (
    LEARNING_CURVE_PNG,
    METRICS_JSONL,
    RunLog,
    update_metrics,
)

def default_run_dir(config: VLMPPOConfig) -> Path:
    """`runs/<env>__<exp_name>__<seed>__<unix time>`, as CleanRL names runs."""
    env_name = config.env_id.rsplit("/", 1)[-1]
    return Path("runs") / f"{env_name}__{config.exp_name}__{config.seed}__{int(time.time())}"


class VLMPPOTrainer(RunCheckpoints):
    r"""PPO trainer for a [`~vlm_agent.models.policy.VLMPolicy`] on a Gymnasium environment with image observations.

    Example (CPU, about a minute; a random tiny model gets no reward, so warm-start it by SFT
    first for learning, as `vlm-agent train` does):

    ```python
    from vlm_agent.training.ppo_config import VLMPPOConfig
    from vlm_agent.training.ppo_trainer import VLMPPOTrainer
    from vlm_agent.demo.tiny_models import make_tiny_model

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

        from vlm_agent.models.loading import ModelSettings
        from vlm_agent.prompting.env_prompts import prompt_for

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
                    "VLMPPOTrainer needs a model: set model_name_or_path, or run the CPU demo "
                    "(vlm_agent.demo.warm_start.train_demo), which builds and warm-starts a tiny one"
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
            policy = VLMPolicy.from_model(model_settings, settings, seed=config.seed, critic=not config.critic_free)
        self.policy = policy
        disable_dropout(policy.model)
        if policy.value_head is not None:
            disable_dropout(policy.value_head)
        if config.language_only:
            from vlm_agent.models.freezing import language_parameters, train_only

            train_only(policy.model, language_parameters(policy.model))
        if config.kl_coef > 0 and not policy.has_adapter:
            # Without LoRA the reference is a copy of the starting trainable weights (see VLMPolicy.keep_reference).
            policy.keep_reference()

        self.optimizer = build_optimizer(config, policy)
        if self.uses_deepspeed:
            self._deepspeed_engine, self.optimizer = prepare_deepspeed(config, policy, self.optimizer, self.accelerator)

        self.algorithm = make_algorithm(config)
        self.rng = np.random.default_rng([config.seed, self.rank])
        invalid_policy = InvalidActionPolicy(
            mode=config.invalid_action, fallback=config.invalid_action_fallback, penalty=config.invalid_action_penalty
        )
        prompt_template = prompt_for(config.env_id, cot=config.use_cot, show_state=config.show_state,
                                     history_steps=config.history_steps)
        self.engine = make_rollout_engine(config, policy, self.rng, self.run_dir)
        if config.critic_free:
            # Whole groups per process, every (round, process, group) its own reset seed.
            num_groups = config.num_envs // config.group_size
            self.collector = GroupCollector(
                config.env_id, num_groups, config.group_size, seed=config.seed + self.rank * num_groups,
                engine=self.engine, prompt_template=prompt_template, invalid_policy=invalid_policy,
                max_steps=config.num_steps, env_kwargs=config.env_kwargs, stride=num_groups * self.world_size,
            )
        else:
            self.collector = RolloutCollector(
                config.env_id,
                config.num_envs,
                seed=config.seed + self.rank * config.num_envs,
                engine=self.engine,
                prompt_template=prompt_template,
                invalid_policy=invalid_policy,
                rng=self.rng,
                env_kwargs=config.env_kwargs,
            )
        self.num_updates = config.num_updates(self.world_size)
        self.update = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.saved_checkpoint: tuple[int | None, Path | None] = (None, None)  # (update, folder) saved last
        self.run_log = RunLog(self.run_dir, config, self.accelerator, is_main=self.is_main)

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
        if config.resume:
            self.load_checkpoint(self.run_dir)  # every check before anything in the folder changes
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_run_config(config, self.run_dir)
        self.run_log.open()
        steps_per_update = config.rollout_size(self.world_size)
        bar = tqdm(
            total=config.total_timesteps if config.critic_free else self.num_updates * steps_per_update,
            initial=self.global_step,
            unit="step",
            desc=f"{config.algorithm.upper()} {config.env_id}",
            disable=not (config.progress_bar and self.is_main),
        )
        stop_at = None if max_updates is None else self.update + max_updates
        # Ctrl-C / SIGTERM (one process): a rollout in progress is abandoned, an update or a save in
        # progress finishes; then the last complete update is saved (`vlm_agent.training.interrupts`).
        guard = SignalGuard(enabled=self.world_size == 1)
        try:
            with guard.installed():
                while not self.finished and (stop_at is None or self.update < stop_at):
                    started = time.perf_counter()
                    resume_point = self.resume_point()  # the state a checkpoint of the last update holds
                    try:
                        with guard.abandonable():
                            learning_rate = self._set_learning_rate()
                            self.policy.eval()
                            rollout, stats = self.collector.collect(
                                config.num_steps,
                                log_samples=config.log_samples if self.is_main else 0,
                                on_step=lambda n: bar.update(n * self.world_size),
                            )
                    except Interrupted as interrupt:
                        if not guard.enabled:  # several processes: saving now would wait on the others
                            raise
                        raise self.stopped(interrupt.signum, resume_point) from None
                    losses = self.ppo_update(rollout)
                    self.update += 1
                    self.global_step += self._steps_taken(rollout, steps_per_update)
                    metrics = self._metrics(rollout, stats, losses, learning_rate, time.perf_counter() - started)
                    self.history.append(metrics)
                    self.run_log.write(self.update, self.global_step, metrics, stats.sample_logs)
                    bar.set_postfix(
                        success=f"{metrics['charts/success_rate']:.2f}",
                        invalid=f"{metrics['charts/invalid_action_rate']:.2f}",
                    )
                    if self.update % config.save_every == 0 or self.finished or self.update == stop_at:
                        self.save_checkpoint()
                    if guard.received is not None:
                        raise self.stopped(guard.received, None)
        finally:
            bar.close()
            self.run_log.close()
            self.engine.close()  # a vLLM server started for the run stops here, on errors and Ctrl-C too
        if self.is_main and self.finished:
            self.save_policy(self.run_dir / "policy")
            plot_learning_curve(self.run_dir / METRICS_JSONL, self.run_dir / LEARNING_CURVE_PNG, title=config.env_id)
        self.accelerator.wait_for_everyone()
        self.collector.close()
        return self.run_dir

    @property
    def finished(self) -> bool:
        """PPO: all `num_updates` updates done. Critic-free algorithms, whose rounds take as many steps
        as their episodes do: `total_timesteps` environment steps taken."""
        if self.config.critic_free:
            return self.global_step >= self.config.total_timesteps
        return self.update >= self.num_updates

    def _steps_taken(self, rollout: Any, steps_per_update: int) -> int:
        """Environment steps of this update over all processes."""
        if not self.config.critic_free:
            return steps_per_update
        return int(self._sum_across_processes(torch.tensor([float(rollout.num_steps)], dtype=torch.float64))[0])

    def _set_learning_rate(self) -> float:
        """The schedule's rate: over updates (PPO), over environment steps (critic-free algorithms)."""
        if self.config.critic_free:
            return set_learning_rate(self.optimizer, self.config, self.global_step, self.config.total_timesteps)
        return set_learning_rate(self.optimizer, self.config, self.update, self.num_updates)

    def ppo_update(self, rollout: Rollout) -> dict[str, float]:
        """The algorithm's advantages over the rollout, then `ppo_epochs` epochs of its loss on shuffled mini-batches.

        Returns mean losses and statistics over all mini-batches of the update.
        """
        config = self.config
        targets = self.algorithm.advantages(rollout)
        samples = rollout.flat_samples()
        advantages, returns = targets.advantages, targets.returns
        weights = advantage_weights(samples, config)  # --old_log_probs engine_tis
        advantages = advantages if weights is None else advantages * weights.to(advantages.dtype)
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
                        returns[index] if returns is not None else None,
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
        if returns is not None:
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
        returns: torch.Tensor | None,
        *,
        scale: float,
    ) -> dict[str, float]:
        out = self.policy.evaluate(samples, with_reference=self.config.kl_coef > 0)
        device, dtype = out.log_probs.device, out.log_probs.dtype
        loss, stats = self.algorithm.loss(MiniBatchScores(
            log_probs=out.log_probs, old_log_probs=old_log_probs.to(device, dtype),
            advantages=advantages.to(device, dtype), entropy=out.entropy, values=out.values,
            old_values=old_values, returns=returns, ref_log_probs=out.ref_log_probs,
        ))
        if self.uses_deepspeed:
            # accelerate marks the group's last micro-batch the boundary; DeepSpeed scales by
            # 1/gradient_accumulation_steps itself, so `scale` (the same factor) is not applied again.
            with self.accelerator.accumulate(self._deepspeed_engine):
                self.accelerator.backward(loss)
        else:
            (loss * scale).backward()
        return stats

    def _optimizer_step(self) -> float:
        return optimizer_step(self.optimizer, self.config.max_grad_norm, self.world_size,
                              deepspeed=self.uses_deepspeed)

    # ------------------------------------------------------------------ metrics and logs
    def _metrics(
        self, rollout: Rollout, stats: RolloutStats, losses: dict[str, float], learning_rate: float, seconds: float
    ) -> dict[str, Any]:
        metrics = update_metrics(self.update, self.global_step, rollout, stats, losses, learning_rate, seconds,
                                 lambda tensor: self._sum_across_processes(tensor))
        metrics.update(engine_metrics(rollout.flat_samples(), self.config))
        if isinstance(rollout, GroupRollout):
            # GiGPO's step-level signal reaches the steps whose state recurs in their group (this process's share).
            metrics["charts/anchor_share"] = anchor_share(rollout.group, rollout.state_keys)
            # GRPO's and RLOO's episode-level signal reaches only the groups whose returns differ.
            metrics["charts/informative_share"] = informative_share(rollout.rewards, rollout.group, rollout.trajectory)
        return metrics

    def _mean_across_processes(self, value: float) -> float:
        return mean_across_processes(value, self.world_size, self.accelerator.device)

    def _sum_across_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        return sum_across_processes(tensor, self.world_size, self.accelerator.device)


def make_algorithm(config: VLMPPOConfig) -> Any:
    """The `vlm_agent.algorithms` object `config.algorithm` names, with the run's coefficients."""
    if config.algorithm == "ppo":
        return PPO(
            gamma=config.gamma, gae_lambda=config.gae_lambda, clip_range=config.clip_range,
            clip_range_value=config.clip_range_value, vf_coef=config.vf_coef, ent_coef=config.ent_coef,
            kl_coef=config.kl_coef, normalize=config.normalize_advantages,
        )
    shared = {"clip_range": config.clip_range, "ent_coef": config.ent_coef, "kl_coef": config.kl_coef,
              "loss_aggregation": config.loss_aggregation}
    return {
        "grpo": lambda: GRPO(**shared),
        "dr_grpo": lambda: GRPO(**shared, scale_by_std=False),
        "rloo": lambda: RLOO(**shared),
        "gigpo": lambda: GiGPO(**shared, gamma=config.gigpo_gamma, omega=config.gigpo_omega),
    }[config.algorithm]()


def _target_modules(text: str) -> str | list[str]:
    return text if text == "all-linear" else [name.strip() for name in text.split(",") if name.strip()]


def prepare_run(config: VLMPPOConfig) -> Path:
    """Checks and settings before a run builds anything; returns its run directory.

    One torch thread per CPU process (unless `VLM_AGENT_NUM_THREADS` says otherwise), the env id
    and options checked, and a `--resume` refused when the folder holds no complete checkpoint.
    """
    if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
        # Small models on shared cores: one thread per process avoids oversubscription, which made
        # generation up to 100x slower on 2-core machines. VLM_AGENT_NUM_THREADS overrides it.
        torch.set_num_threads(int(os.environ.get("VLM_AGENT_NUM_THREADS", "1")))
    check_env(config.env_id, config.env_kwargs)  # before any model is built
    run_dir = Path(config.output_dir) if config.output_dir else default_run_dir(config)
    if config.resume and latest_checkpoint(run_dir) is None:
        if (run_dir / METRICS_JSONL).exists():  # "drop --resume" would be refused: the folder holds a run
            raise CheckpointError(
                f"--resume was given but {run_dir} holds no complete checkpoint; its damaged checkpoints are left as "
                f"they are: choose another --output_dir, or move {run_dir} away to start the run over"
            )
        raise CheckpointError(f"--resume was given but {run_dir} holds no complete checkpoint; drop --resume to start fresh")
    return run_dir


def train(config: VLMPPOConfig, run_dir: str | Path | None = None) -> Path:
    """What `vlm-agent train --model_name_or_path PATH` runs: PPO on the given model; returns the run directory.

    Without a model, `vlm-agent train` runs the CPU demo instead (`vlm_agent.demo.warm_start.train_demo`),
    which builds and warm-starts the tiny model and then calls this.
    """
    if config.model_name_or_path is None:
        raise ValueError(
            "train needs a model: set model_name_or_path, or run the CPU demo "
            "(vlm_agent.demo.warm_start.train_demo), which builds and warm-starts a tiny one"
        )
    resolved = prepare_run(config)
    return VLMPPOTrainer(config, run_dir=run_dir or resolved).train()
