"""Run by `tests/test_ppo_robustness.py` under `torch.distributed.run` (2 CPU processes, gloo).

`python distributed_worker.py MODE MODEL_DIR OUT_DIR`, MODE one of:

- `accumulation`: each process builds the same trainer twice, once with one mini-batch of 4
  samples per optimizer step and once with 2 accumulated mini-batches of 2, runs one PPO update on
  its own rollout, and saves how much every trainable parameter moved
  (`OUT_DIR/<setup>_rank<r>.pt`). Adam's update is nearly gradient-scale free (m / sqrt(v) is about
  sign(g) on the first step), which would hide a loss scaled twice; with `adam_epsilon` far above
  the gradients the step is `lr * g / eps`, linear in the gradient, so a wrong scale or a missing
  average shows.
- `target_kl`: one update of 3 epochs with `target_kl` 0.1, where process 1's policy has drifted
  from its rollout (its stored log-probs are lowered by 1 nat: approx KL about 0.72) and process
  0's has not (approx KL about 0). Writes the epochs each process ran (`OUT_DIR/epochs.json`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from vlm_agent.training.ppo_config import VLMPPOConfig
from vlm_agent.training.ppo_trainer import VLMPPOTrainer


def small_config(model_dir: str, output_dir: Path, **overrides) -> VLMPPOConfig:
    settings = dict(
        model_name_or_path=model_dir, device="cpu", num_envs=2, num_steps=2, total_timesteps=8, max_new_tokens=8,
        temperature=1.0, ppo_epochs=1, mini_batch_size=4, gradient_accumulation_steps=1, lora_r=4, lora_alpha=8,
        output_dir=str(output_dir), progress_bar=False, deterministic=True,
    )
    settings.update(overrides)
    return VLMPPOConfig(**settings)


def accumulation(model_dir: str, out: Path) -> None:
    for setup, mini_batch_size, steps in (("one_batch", 4, 1), ("accumulated", 2, 2)):
        config = small_config(
            model_dir, out / setup, mini_batch_size=mini_batch_size, gradient_accumulation_steps=steps,
            learning_rate=1.0, min_learning_rate=1.0, lr_scheduler="constant", adam_epsilon=100.0, max_grad_norm=1e9,
        )
        trainer = VLMPPOTrainer(config)
        parameters = dict(trainer.policy.model.named_parameters())
        parameters.update({f"value_head.{k}": v for k, v in trainer.policy.value_head.named_parameters()})
        before = {name: p.detach().clone() for name, p in parameters.items() if p.requires_grad}
        rollout, _ = trainer.collector.collect(config.num_steps)
        trainer.ppo_update(rollout)
        moved = {name: parameters[name].detach() - before[name] for name in before}
        torch.save(moved, out / f"{setup}_rank{trainer.rank}.pt")
        trainer.collector.close()


def target_kl(model_dir: str, out: Path) -> None:
    config = small_config(model_dir, out / "run", ppo_epochs=3, target_kl=0.1, learning_rate=1e-5)
    trainer = VLMPPOTrainer(config)
    rollout, _ = trainer.collector.collect(config.num_steps)
    if trainer.rank == 1:
        rollout.log_probs -= 1.0
    stats = trainer.ppo_update(rollout)
    epochs: list[float] = [0.0] * trainer.world_size
    dist.all_gather_object(epochs, stats["losses/ppo_epochs_run"])
    if trainer.rank == 0:
        (out / "epochs.json").write_text(json.dumps(epochs))
    trainer.collector.close()


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, model_dir, out_dir = sys.argv[1:4]
    {"accumulation": accumulation, "target_kl": target_kl}[mode](model_dir, Path(out_dir))
