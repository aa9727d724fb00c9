"""The optimizer of a training run: AdamW over the trainable model weights and the value head (each
with its learning rate and schedule), gradient clipping, and DeepSpeed's take on both.

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

from typing import Any

import torch

from vlm_agent.algorithms.ppo import scheduled_learning_rate
from vlm_agent.training.distributed import average_gradients_across_processes


def build_optimizer(config: Any, policy: Any) -> torch.optim.AdamW:
    """AdamW with two groups: the trainable model weights (`learning_rate`) and the value head
    (`value_head_learning_rate`, default the same); each group remembers its `base_lr` for the schedule.

    Raises:
        ValueError: The model has no trainable parameter.
    """
    model_parameters = [p for p in policy.model.parameters() if p.requires_grad]
    if not model_parameters:
        raise ValueError("the model has no trainable parameters; use LoRA (use_lora=True) or unfreeze weights")
    value_lr = config.value_head_learning_rate or config.learning_rate
    groups = [{"params": model_parameters, "lr": config.learning_rate, "base_lr": config.learning_rate}]
    if policy.value_head is not None:  # critic-free algorithms build none
        groups.append({"params": list(policy.value_head.parameters()), "lr": value_lr, "base_lr": value_lr})
    return torch.optim.AdamW(
        groups,
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
    )


def prepare_deepspeed(config: Any, policy: Any, optimizer: Any, accelerator: Any) -> tuple[Any, Any]:
    """The DeepSpeed engine around the model and value head, and its optimizer (see the module docstring).

    Raises:
        ValueError: Accumulation groups that DeepSpeed cannot fill, or a DeepSpeed config that
            accumulates another number of micro-batches.
    """
    mini_batches = config.num_steps * config.num_envs // config.mini_batch_size
    if mini_batches % config.gradient_accumulation_steps:
        raise ValueError(
            f"with DeepSpeed, the {mini_batches} mini-batches per epoch must fill whole accumulation groups of "
            f"gradient_accumulation_steps={config.gradient_accumulation_steps} (DeepSpeed scales every "
            "micro-batch by 1/gradient_accumulation_steps); choose a divisor"
        )
    # No dataloader tells DeepSpeed the micro-batch size; it is the PPO mini-batch.
    accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.mini_batch_size
    modules = torch.nn.ModuleDict({"model": policy.model})
    if policy.value_head is not None:
        modules["value_head"] = policy.value_head
    engine, optimizer = accelerator.prepare(modules, optimizer)
    if accelerator.gradient_accumulation_steps != config.gradient_accumulation_steps:
        raise ValueError(
            f"the DeepSpeed config accumulates {accelerator.gradient_accumulation_steps} micro-batches but "
            f"gradient_accumulation_steps={config.gradient_accumulation_steps}; set gradient_accumulation_steps "
            "in the accelerate/DeepSpeed config to the same value (or to auto)"
        )
    return engine, optimizer


def set_learning_rate(optimizer: Any, config: Any, update: int, num_updates: int) -> float:
    """Set each group's learning rate for `update` (`config.lr_scheduler` from its `base_lr` down to
    `min_learning_rate` scaled alike); returns the model group's."""
    for group in optimizer.param_groups:
        base = group.get("base_lr", config.learning_rate)
        minimum = config.min_learning_rate * base / config.learning_rate
        group["lr"] = scheduled_learning_rate(config.lr_scheduler, update, num_updates, base, minimum)
    return optimizer.param_groups[0]["lr"]


def optimizer_step(optimizer: Any, max_grad_norm: float, world_size: int, *, deepspeed: bool) -> float:
    """Average gradients across processes, clip them, step; returns the pre-clip gradient norm."""
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    if deepspeed:
        # DeepSpeed stepped (and zeroed) inside accelerator.backward at the group's boundary;
        # the wrapped optimizer's step and zero_grad are no-ops there.
        optimizer.step()
        optimizer.zero_grad()
        return float("nan")
    if world_size > 1:
        average_gradients_across_processes(parameters, world_size)
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm)
