"""One-GPU check of the PPO trainer at real size (a few minutes on one GPU; the budget is 8).

What it builds, without any download: a randomly initialised Qwen2.5-VL-3B-Instruct-shaped model
(the published `config.json` of Qwen/Qwen2.5-VL-3B-Instruct, written out below: 36 layers of
width 2048, 151936-token vocabulary, the 32-block vision tower; about 3.8B parameters) in
bfloat16, with LoRA r128 / alpha 256 / dropout 0.05 on every linear layer and gradient
checkpointing, as `vlm_agent.models.loading.load_model` sets them up. Its tokenizer is the project's
small offline one (`vlm_agent.demo.tiny_models`, the Qwen special tokens and chat template); ids above
its vocabulary decode to nothing, which only makes the random answers shorter as text.

What it runs: one PPO update at the paper's settings (temperature 0.2, 256 new tokens, CoT scale
0.5, 4 epochs, mini-batch 1, clip 0.1, lr 1e-5, max grad norm 0.01) on `gym_cards/Blackjack-v0`,
except the rollout: `--num_envs` x `--num_steps` (default 4 x 8 = 32 samples) instead of 512.

What it reports (JSON on stdout, and `gpu_check.{json,md}` in `--output_dir` when given):

- `generated_tokens_per_second`: answer tokens per second of the batched rollout;
- `update_seconds`: the PPO update (`ppo_update`: forward + backward over every mini-batch);
- `peak_gpu_memory_gib`: `torch.cuda.max_memory_allocated` over the whole check;
- `max_abs_log_prob_drift_{bfloat16,float32}`: at zero parameter change, the largest
  |old - new| CoT-scaled log-prob over the rollout, where "old" is what the sampler recorded while
  generating and "new" the update's forward (train mode, dropout off) over the same answers. The
  bfloat16 number is the rounding PPO's ratio sees at the start of every update; float32 is the
  control.

`--rollout_engine vllm` also saves the same model shape and compares its rollouts with HF `generate`
and with a vLLM server started from `--vllm_python` (`rollout_engines` in the report: env steps/s,
tokens/s, engine-vs-trainer mean |delta log p|; `benchmarks.rollout_engines.measure`).

`--tiny` (automatic without CUDA) runs the same code on the tiny Qwen2.5-VL model on CPU, in
seconds; `tests/test_gpu_check.py` runs it so the script cannot rot. It has not been run on a
GPU yet (no GPU was available where it was written).

    python -m benchmarks.gpu_check --output_dir benchmarks/results     # on a GPU machine
    python -m benchmarks.gpu_check --tiny                              # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

#: Qwen/Qwen2.5-VL-3B-Instruct's published config.json (architecture fields; token ids come from
#: our tokenizer). transformers 5 reads `rope_parameters`.
QWEN2_5_VL_3B_TEXT = {
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    "attention_dropout": 0.0,
    "tie_word_embeddings": True,
}
QWEN2_5_VL_3B_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_chans": 3,
    "out_hidden_size": 2048,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "hidden_act": "silu",
}
#: Special-token ids the model config must share with our tokenizer.
QWEN_TOKEN_ID_FIELDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


def real_size_config(tiny_config: Any) -> Any:
    """The 3B-shaped config, with the special-token ids of the tiny model's tokenizer."""
    from transformers import Qwen2_5_VLConfig

    text = {**QWEN2_5_VL_3B_TEXT, "bos_token_id": None, "eos_token_id": tiny_config.text_config.eos_token_id,
            "pad_token_id": tiny_config.text_config.pad_token_id}
    token_ids = {name: getattr(tiny_config, name) for name in QWEN_TOKEN_ID_FIELDS}
    return Qwen2_5_VLConfig(text_config=text, vision_config=QWEN2_5_VL_3B_VISION, tie_word_embeddings=True, **token_ids)


def build_model(tiny: bool, dtype: Any, device: str, work_dir: Path) -> tuple[Any, Any]:
    """(model, processor): tiny Qwen2.5-VL (`tiny`) or the 3B shape, random weights."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForImageTextToText,
        Qwen2VLImageProcessorPil,
    )

    from vlm_agent.demo.tiny_models import make_tiny_model
    from vlm_agent.models.loading import load_processor

    tiny_dir = make_tiny_model("qwen2_5_vl", work_dir / "tiny_qwen2_5_vl", seed=0)
    processor = load_processor(tiny_dir)
    config = AutoConfig.from_pretrained(tiny_dir)
    if not tiny:
        config = real_size_config(config)
        # The published image processor: 14 px patches, 2 x 2 merge, up to 1280 merged tokens.
        processor.image_processor = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return model, processor


def build_policy(tiny: bool, dtype: Any, device: str, lora_r: int, settings: Any, work_dir: Path) -> Any:
    """The policy: `build_model`'s model with LoRA on every linear layer and checkpointing."""
    from peft import LoraConfig, get_peft_model

    from vlm_agent.models.policy import VLMPolicy

    model, processor = build_model(tiny, dtype, device, work_dir)
    # As vlm_agent.models.loading.load_model does for ModelSettings(gradient_checkpointing=True, use_lora=True).
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft 0.21 reads a transformers attribute deprecated in 5.x (as in models.py)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(model, lora)
    return VLMPolicy(model, processor, settings=settings)


def log_prob_drift(trainer: Any, num_steps: int) -> tuple[float, float]:
    """(max, mean) |sampler log-prob - update-forward log-prob| over a fresh rollout, no update between."""
    import torch

    rollout, _ = trainer.collector.collect(num_steps)
    trainer.policy.train()  # as in ppo_update: train mode, dropout off
    with torch.no_grad():
        new = torch.cat([
            trainer.policy.evaluate(samples).log_probs.double().cpu() for samples in rollout.samples
        ])
    trainer.policy.eval()
    drift = (rollout.log_probs.reshape(-1) - new).abs()
    return float(drift.max()), float(drift.mean())


def run_check(tiny: bool, num_envs: int, num_steps: int, lora_r: int, max_new_tokens: int, ppo_epochs: int) -> dict:
    import torch

    from vlm_agent.models.settings import GenerationSettings
    from vlm_agent.training.ppo_config import VLMPPOConfig
    from vlm_agent.training.ppo_trainer import VLMPPOTrainer

    cuda = torch.cuda.is_available() and not tiny
    device = "cuda" if cuda else "cpu"
    if not cuda:
        torch.set_num_threads(1)
    settings = GenerationSettings(temperature=0.2, max_new_tokens=max_new_tokens, cot_scale=0.5)
    report: dict[str, Any] = {
        "model": "tiny Qwen2.5-VL (CPU)" if tiny else "Qwen2.5-VL-3B shape, random weights",
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "num_envs": num_envs, "num_steps": num_steps, "max_new_tokens": max_new_tokens, "lora_r": lora_r,
        "ppo_epochs": ppo_epochs,
    }
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        started = time.perf_counter()
        policy = build_policy(tiny, torch.bfloat16, device, lora_r, settings, work_dir)
        report["build_seconds"] = time.perf_counter() - started
        report["parameters"] = sum(p.numel() for p in policy.model.parameters())
        report["trainable_parameters"] = sum(p.numel() for p in policy.model.parameters() if p.requires_grad)
        config = VLMPPOConfig(
            env_id="gym_cards/Blackjack-v0", device=device, dtype="bfloat16", num_envs=num_envs, num_steps=num_steps,
            total_timesteps=num_envs * num_steps, temperature=0.2, max_new_tokens=max_new_tokens, cot_scale=0.5,
            ppo_epochs=ppo_epochs, mini_batch_size=1, gradient_accumulation_steps=128, lora_r=lora_r,
            lora_alpha=2 * lora_r, gradient_checkpointing=True, output_dir=str(work_dir / "run"), progress_bar=False,
            log_samples=0,
        )
        trainer = VLMPPOTrainer(config, policy=policy)
        if cuda:
            torch.cuda.reset_peak_memory_stats()

        report["max_abs_log_prob_drift_bfloat16"], report["mean_abs_log_prob_drift_bfloat16"] = log_prob_drift(
            trainer, 1
        )
        rollout, stats = trainer.collector.collect(num_steps)
        report["generated_tokens"] = stats.generated_tokens
        report["generated_tokens_per_second"] = stats.generated_tokens / stats.generation_seconds
        report["rollout_seconds"] = stats.seconds
        started = time.perf_counter()
        losses = trainer.ppo_update(rollout)
        if cuda:
            torch.cuda.synchronize()
        report["update_seconds"] = time.perf_counter() - started
        report["update_losses"] = {k: v for k, v in losses.items() if k.startswith("losses/")}
        if cuda:
            report["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30

        policy.model.float()
        policy.value_head.float()
        report["max_abs_log_prob_drift_float32"], report["mean_abs_log_prob_drift_float32"] = log_prob_drift(trainer, 1)
        trainer.collector.close()
    return report


def vllm_check(tiny: bool, num_envs: int, num_steps: int, max_new_tokens: int, lora_r: int,
               vllm_python: str | None) -> list[dict]:
    """The same model shape saved and served by vLLM: HF vs vLLM rollout speed and the engine-vs-trainer
    log-prob mismatch, one row per engine (`benchmarks.rollout_engines.measure`; LoRA on the language
    model, which is what vLLM applies). Needs a vLLM venv (`vllm_python`); never run on a GPU yet."""
    import torch

    from benchmarks.rollout_engines import measure

    cuda = torch.cuda.is_available() and not tiny
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        model, processor = build_model(tiny, torch.bfloat16 if cuda else torch.float32, "cpu", work_dir)
        model.save_pretrained(work_dir / "model")
        processor.save_pretrained(work_dir / "model")
        del model
        args = argparse.Namespace(
            num_envs=num_envs, steps=num_steps, new_tokens=max_new_tokens, temperature=0.2, lora_r=lora_r,
            dtype="bfloat16" if cuda else "float32", device="cuda" if cuda else "cpu", vllm_url=None,
            vllm_python=vllm_python, server_args="--gpu-memory-utilization 0.4" if cuda else
            "--enforce-eager --max-model-len 1024",
        )
        return [measure(engine, str(work_dir / "model"), args, work_dir) for engine in ("hf", "vllm")]


def markdown(report: dict) -> str:
    rows = [
        ("model", report["model"]), ("device", report["device"]),
        ("parameters (trainable)", f"{report['parameters'] / 1e9:.2f}B ({report['trainable_parameters'] / 1e6:.0f}M)"),
        ("rollout", f"{report['num_envs']} envs x {report['num_steps']} steps, {report['max_new_tokens']} new tokens"),
        ("generated tokens/s", f"{report['generated_tokens_per_second']:.1f}"),
        ("PPO update (s)", f"{report['update_seconds']:.1f} ({report['ppo_epochs']} epochs, mini-batch 1)"),
        ("peak GPU memory (GiB)", f"{report.get('peak_gpu_memory_gib', float('nan')):.1f}"),
        ("max abs old-new log-prob, bfloat16", f"{report['max_abs_log_prob_drift_bfloat16']:.3g}"),
        ("max abs old-new log-prob, float32", f"{report['max_abs_log_prob_drift_float32']:.3g}"),
    ]
    for row in report.get("rollout_engines", []):
        delta = "-" if row["mean_abs_delta_logp"] == "" else format(row["mean_abs_delta_logp"], ".2e")
        rows.append((f"rollout engine {row['engine']}: env steps/s, tokens/s, mean abs delta log p",
                     f"{row['env_steps_per_s']:.2f}, {row['tokens_per_s']:.0f}, {delta}"))
    lines = ["| quantity | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (automatic without CUDA)")
    parser.add_argument("--num_envs", type=int, default=None, help="default 4 (tiny: 2)")
    parser.add_argument("--num_steps", type=int, default=None, help="default 8 (tiny: 2)")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="default 256, the paper's (tiny: 8)")
    parser.add_argument("--ppo_epochs", type=int, default=None, help="default 4, the paper's (tiny: 1)")
    parser.add_argument("--rollout_engine", choices=("hf", "vllm"), default="hf",
                        help="vllm: also compare HF and a vLLM server on the same model shape (benchmarks.rollout_engines)")
    parser.add_argument("--vllm_python", default=None, help="the vLLM venv's python (default $VLM_AGENT_VLLM_PYTHON "
                        "or ./.venv-vllm/bin/python)")
    parser.add_argument("--output_dir", type=Path, default=None, help="also write gpu_check.json and gpu_check.md here")
    args = parser.parse_args(argv)
    tiny = args.tiny or not torch.cuda.is_available()
    if tiny and not args.tiny:
        print("no CUDA device: running the tiny CPU check (--tiny)")

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if tiny else full)

    report = run_check(
        tiny,
        num_envs=pick(args.num_envs, 4, 2),
        num_steps=pick(args.num_steps, 8, 2),
        lora_r=8 if tiny else 128,
        max_new_tokens=pick(args.max_new_tokens, 256, 8),
        ppo_epochs=pick(args.ppo_epochs, 4, 1),
    )
    if args.rollout_engine == "vllm":
        report["rollout_engines"] = vllm_check(
            tiny, num_envs=pick(args.num_envs, 4, 2), num_steps=pick(args.num_steps, 8, 2),
            max_new_tokens=pick(args.max_new_tokens, 256, 8), lora_r=8 if tiny else 128, vllm_python=args.vllm_python)
    print(json.dumps(report, indent=1))
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.output_dir / "gpu_check.md").write_text(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
