"""Configuration of PPO fine-tuning of a vision-language model (`VLMPPOTrainer`).

The defaults are the paper's (Zhai et al., NeurIPS 2024, "RL4VLM") for the card games. The
embedded CPU demonstration (`vlm-agent train` without a model) overrides some of them from
`vlm_agent/configs/tiny_numberline_cpu.yaml`.

Every field carries a `help` that becomes `vlm-agent train --help`; YAML files given with
`--config` set the same fields by name (parsed by `trl.TrlParser`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from vlm_agent.agents.settings import AgentSettings
from vlm_agent.algorithms import LOSS_AGGREGATIONS
from vlm_agent.models.settings import KV_CACHES
from vlm_agent.rollout.environments import EnvKwargs

#: Key/value cache kinds while generating (see :attr:`vlm_agent.models.settings.GenerationSettings.kv_cache`).

#: Names accepted by `report_to`, besides "none".
REPORT_TARGETS = ("tensorboard", "wandb")
#: What to do when the model's answer names no legal action (see `vlm_agent.prompting.parsing`).
INVALID_ACTION_CHOICES = ("random", "penalty", "nothing")
#: What `rollout_engine` chooses from (vlm_agent.rollout.engine, vlm_agent.rollout.vllm_engine).
ROLLOUT_ENGINES = ("hf", "vllm")
ALGORITHMS = ("ppo", "grpo", "dr_grpo", "rloo", "gigpo")
"""The RL algorithms `--algorithm` chooses from (vlm_agent.algorithms)."""
TINY_ARCHITECTURES = ("qwen2_vl", "qwen2_5_vl", "llava_next", "idefics3", "gemma3")


@dataclass
class VLMPPOConfig:
    r"""
    Configuration for [`~vlm_agent.training.ppo_trainer.VLMPPOTrainer`].

    Field groups: model, environment, prompting and generation, PPO, optimisation, LoRA, tiny-model
    warm start, checkpointing and logging. See each field's `help`, or `vlm-agent train --help`.

    Rollout arithmetic: one update collects `num_steps` environment steps in each of `num_envs`
    environments (per process), so `batch_size = num_steps * num_envs * world_size`, and the run
    has `num_updates = ceil(total_timesteps / batch_size)` updates.
    """

    #: Text options that list names separated by ",": a config file may write them as a YAML list.
    COMMA_SEPARATED: ClassVar[tuple[str, ...]] = ("lora_target_modules", "report_to")

    # > Model
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Local path (or hub id, if the hub is reachable) of a vision-language model loadable with "
            "AutoModelForImageTextToText, ideally after SFT. Leave empty to build the tiny offline model "
            "(`tiny_arch`) and warm-start it by SFT on expert demonstrations."
        },
    )
    tiny_arch: str = field(
        default="qwen2_vl",
        metadata={"help": f"Architecture of the tiny model built when no model is given; one of {TINY_ARCHITECTURES}."},
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype: auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16."},
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in the backward pass (less memory, more time)."}
    )
    device: str = field(
        default="auto",
        metadata={"help": "auto (the accelerator's device, else CPU), cpu, or cuda."},
    )

    # > Environment
    env_id: str = field(
        default="gym_cards/NumberLine-v0",
        metadata={"help": "Gymnasium id of the task, e.g. gym_cards/NumberLine-v0, gym_cards/Blackjack-v0."},
    )
    num_envs: int = field(
        default=1,
        metadata={"help": "Parallel environments per process; their observations are generated in one batch."},
    )
    env_kwargs: EnvKwargs = field(
        default_factory=EnvKwargs,
        metadata={
            "help": "Options of gymnasium.make(env_id, **env_kwargs), as a JSON or YAML mapping, e.g. "
            "'{\"split\": \"eval\", \"task_types\": [\"pick\"]}' (ALFWorld), '{\"max_position\": 8}' "
            "(NumberLine). Checked against the env's constructor before any model is built."
        },
    )
    seed: int = field(default=1, metadata={"help": "Seed of everything: envs (offset by rank), torch, numpy, python."})

    # > Prompting and generation
    use_cot: bool = field(
        default=True,
        metadata={"help": "Ask for chain-of-thought ('thoughts' before 'action'); False gives the action-only prompt."},
    )
    show_state: bool = field(
        default=False,
        metadata={
            "help": "Card games: also put the env's text description of the state in the prompt (the paper's prompts "
            "are image-only; use this for models that cannot read the images, e.g. the tiny CPU models)."
        },
    )
    history_steps: int = field(default=0, metadata={"help": "Earlier steps of the episode the prompt recalls (K): the env's text observation and the action executed, oldest first, emptied when an episode starts (image-only prompts recall the actions alone). 0: none (the paper's prompts; the card games' default); paper_alfworld.yaml uses 2."})
    cot_scale: float = field(
        default=0.5,
        metadata={
            "help": "lambda in log pi = lambda * sum log p(CoT tokens) + sum log p(action tokens), in [0, 1] "
            "(paper: 0.5 cards, 0.2 ALFWorld)."
        },
    )
    temperature: float = field(default=0.2, metadata={"help": "Sampling temperature (> 0); log-probs use logits / T."})
    max_new_tokens: int = field(default=256, metadata={"help": "Longest generated answer, in tokens."})
    kv_cache: str = field(
        default="static",
        metadata={
            "help": "Key/value cache while generating: 'static' (preallocated, written in place; faster) or "
            "'dynamic' (grown every step, Hugging Face's default). Same samples either way."
        },
    )
    rollout_engine: str = field(
        default="hf",
        metadata={
            "help": "What samples the rollouts: 'hf' (Hugging Face generate in this process) or 'vllm' (a vLLM server "
            "over HTTP: --vllm_url, or a local one started for the run; LoRA only, see README 'Rollouts with vLLM')."
        },
    )
    vllm_url: str | None = field(
        default=None, metadata={"help": "A running vLLM server serving the run's model (http://host:port); "
                                        "none: start a local one on 127.0.0.1 for the run."},
    )
    vllm_python: str | None = field(
        default=None, metadata={"help": "Python of the vLLM venv that starts the local server (default "
                                        "$VLM_AGENT_VLLM_PYTHON, else ./.venv-vllm/bin/python: bash .ci/make-vllm-venv)."},
    )
    vllm_server_args: str = field(
        default="", metadata={"help": "More flags for the local vLLM server, e.g. '--enforce-eager --max-model-len 1024'."},
    )
    old_log_probs: str = field(
        default="trainer",
        metadata={
            "help": "With --rollout_engine vllm, PPO's old log-probs: 'trainer' (the trainer's own forward over the "
            "sampled ids; exact) or 'engine_tis' (also weight each answer by min(p_trainer / p_engine, tis_cap), "
            "truncated importance sampling for the engine's mismatch)."
        },
    )
    tis_cap: float = field(default=2.0, metadata={"help": "Cap C of the truncated importance weights (engine_tis)."})
    invalid_action: str = field(
        default="random",
        metadata={
            "help": "When the answer names no single legal action: 'random' (the paper's card games: a uniformly "
            "random legal action, reward unchanged) or 'penalty' (legal action `invalid_action_fallback` and "
            "`invalid_action_penalty` subtracted from the reward) or 'nothing' (ALFWorld only, the paper's ALFWorld rule: "
            "the answer runs as an inadmissible command, nothing happens and the env pays -1)."
        },
    )
    invalid_action_penalty: float = field(
        default=1.0, metadata={"help": "Amount (>= 0) subtracted from the reward of an unusable answer in 'penalty' mode."}
    )
    invalid_action_fallback: int = field(
        default=0, metadata={"help": "Index of the legal action taken for an unusable answer in 'penalty' mode."}
    )

    # > Algorithm
    algorithm: str = field(
        default="ppo",
        metadata={
            "help": "ppo (a value head, GAE; the paper's), grpo, dr_grpo, rloo or gigpo (critic-free: groups of "
            "group_size episodes from the same initial state; see vlm_agent.algorithms.group)."
        },
    )
    group_size: int = field(
        default=8,
        metadata={"help": "Episodes per group (G) of the critic-free algorithms; num_envs = groups x G. Ignored by ppo."},
    )
    gigpo_gamma: float = field(default=0.95, metadata={"help": "gigpo: discount of the step-level returns, in [0, 1]."})
    gigpo_omega: float = field(default=1.0, metadata={"help": "gigpo: weight of the step-level advantage (>= 0)."})
    loss_aggregation: str = field(
        default="step",
        metadata={"help": "Critic-free algorithms: how the loss weighs a round's steps: 'step' (each step alike) or "
                  "'episode' (each episode alike, GRPO's per-output mean; see vlm_agent.algorithms.group)."},
    )

    # > PPO
    total_timesteps: int = field(default=15000, metadata={"help": "Environment steps of the whole run (all processes)."})
    num_steps: int = field(
        default=512,
        metadata={
            "help": "ppo: environment steps per environment per update (the rollout length). Critic-free "
            "algorithms: the most steps of one round of episodes (episodes still running are cut there)."
        },
    )
    gamma: float = field(default=0.9, metadata={"help": "Discount factor, in [0, 1]."})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda, in [0, 1] (0: one-step TD, 1: Monte Carlo)."})
    clip_range: float = field(default=0.1, metadata={"help": "PPO ratio clip epsilon (> 0)."})
    clip_range_value: float | None = field(
        default=0.1,
        metadata={"help": "Clip of the value update around the rollout value; empty/None for the unclipped loss."},
    )
    vf_coef: float = field(default=0.5, metadata={"help": "Weight of the value loss (>= 0)."})
    ent_coef: float = field(
        default=0.0, metadata={"help": "Weight of the entropy bonus (>= 0); entropy of the generated tokens."}
    )
    kl_coef: float = field(
        default=0.0,
        metadata={
            "help": "Weight of a KL penalty to the reference policy (the model with LoRA adapters disabled; "
            "without LoRA, a copy of the starting trainable weights), added to the loss; 0 turns it off and "
            "skips the reference forward."
        },
    )
    ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout."})
    mini_batch_size: int = field(default=1, metadata={"help": "Samples per forward/backward pass."})
    gradient_accumulation_steps: int = field(
        default=128, metadata={"help": "Mini-batches accumulated per optimizer step."}
    )
    normalize_advantages: bool = field(default=True, metadata={"help": "Normalise advantages over each rollout."})
    target_kl: float | None = field(
        default=None, metadata={"help": "Stop an update's epochs early when approx KL exceeds this; None: never."}
    )

    # > Optimisation
    learning_rate: float = field(default=1e-5, metadata={"help": "Initial Adam learning rate."})
    min_learning_rate: float = field(default=1e-9, metadata={"help": "Final learning rate of the cosine schedule."})
    lr_scheduler: str = field(default="cosine", metadata={"help": "cosine (to min_learning_rate) or constant."})
    max_grad_norm: float = field(default=0.01, metadata={"help": "Gradient clipping norm (> 0)."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "Adam epsilon."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    value_head_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the value head; None: same as learning_rate."}
    )

    # > LoRA
    use_lora: bool = field(default=True, metadata={"help": "Train LoRA adapters (True) or all weights (False)."})
    language_only: bool = field(
        default=False,
        metadata={
            "help": "With use_lora=False: train the language model's layers alone (vision tower, projector and word "
            "embeddings frozen), for a model aligned by `vlm-agent align`: updating the whole model erased the "
            "alignment's image read-out within 8 PPO updates (benchmarks/results/ppo_learning.md)."
        },
    )
    lora_r: int = field(default=128, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(
        default=0.05,
        metadata={
            "help": "LoRA dropout written into the adapter's config, in [0, 1). PPO itself runs with every dropout "
            "off (acting and the update must score an answer alike), so it only acts if the saved adapter is "
            "fine-tuned further elsewhere."
        },
    )
    lora_target_modules: str = field(
        default="all-linear",
        metadata={"help": "all-linear (the paper: every linear layer) or comma-separated module names."},
    )

    # > Tiny model warm start (only when model_name_or_path is empty)
    sft_num_demos: int = field(
        default=256, metadata={"help": "Expert demonstrations for the SFT warm start of the tiny model."}
    )
    sft_epochs: float = field(default=3.0, metadata={"help": "SFT epochs of the warm start."})
    sft_learning_rate: float = field(default=3e-3, metadata={"help": "SFT learning rate of the warm start."})
    sft_wrong_action_rate: float = field(
        default=0.0,
        metadata={"help": "Share of demonstrations whose action is deliberately wrong, in [0, 1]."},
    )
    align_projector_steps: int = field(
        default=0,
        metadata={
            "help": "Before the SFT warm start, align a tiny model with legible vision settings to read the env's "
            "image (`vlm-agent align`): steps of stage 1 (the projector). With alignment (either align_*_steps "
            "above 0) the SFT trains the language model's layers alone; for image-only runs (show_state=False). "
            "0 and 0: no alignment."
        },
    )
    align_language_steps: int = field(
        default=0, metadata={"help": "Alignment before the warm start: steps of stage 2 (the language model's layers)."}
    )
    align_num_examples: int = field(
        default=1024, metadata={"help": "Alignment before the warm start: state images per environment."}
    )

    # > Checkpointing and logging
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Run directory; default runs/<env>__<exp_name>__<seed>__<unix time>."},
    )
    exp_name: str = field(default="ppo", metadata={"help": "Experiment name, part of the default run directory."})
    save_every: int = field(default=5, metadata={"help": "Write a checkpoint every this many updates (and at the end)."})
    resume: bool = field(
        default=False,
        metadata={"help": "Continue from the latest checkpoint in output_dir (requires output_dir)."},
    )
    report_to: str = field(
        default="none",
        metadata={"help": f"Comma-separated loggers besides JSONL/CSV: none, {', '.join(REPORT_TARGETS)}."},
    )
    log_samples: int = field(default=4, metadata={"help": "Generations (text + parsed action) logged per update."})
    final_eval_episodes: int = field(
        default=0,
        metadata={
            "help": "After training, `vlm-agent train` plays this many held-out episodes each with random play, "
            "the starting (warm-start) model, the trained policy and the expert, and writes the comparison "
            "(held_out_comparison.{md,csv}) and its levels into learning_curve.png; 0 skips it."
        },
    )
    progress_bar: bool = field(default=True, metadata={"help": "Show a tqdm progress bar."})
    deterministic: bool = field(
        default=False, metadata={"help": "torch.use_deterministic_algorithms (for resume-equivalence checks)."}
    )

    def __post_init__(self) -> None:
        # HfArgumentParser hands "None" through as text for optional floats given on the command line.
        for name in ("clip_range_value", "target_kl", "value_head_learning_rate"):
            if isinstance(getattr(self, name), str):
                value = getattr(self, name)
                setattr(self, name, None if value.lower() in ("none", "null", "") else float(value))
        for name in ("model_name_or_path", "vllm_url", "vllm_python"):
            if getattr(self, name) == "":
                setattr(self, name, None)
        self.env_kwargs = EnvKwargs(self.env_kwargs)
        self._check_types()
        self._validate()

    def _check_types(self) -> None:
        """Each field against its declared type (Python callers; config files are checked on reading)."""
        from vlm_agent.config_files import ConfigFileError, check_options

        values = {f.name: getattr(self, f.name) for f in fields(self)}
        try:
            checked = check_options(values, type(self), source="VLMPPOConfig", comma_separated=self.COMMA_SEPARATED)
        except ConfigFileError as error:
            raise ValueError(str(error)) from None
        for name, value in checked.items():
            setattr(self, name, value)

    def _validate(self) -> None:
        def fail(name: str, problem: str, fix: str) -> None:
            raise ValueError(f"VLMPPOConfig.{name}={getattr(self, name)!r} {problem}; {fix}.")

        for name in ("num_envs", "num_steps", "total_timesteps", "ppo_epochs", "mini_batch_size",
                     "gradient_accumulation_steps", "max_new_tokens", "save_every", "lora_r", "lora_alpha",
                     "sft_num_demos", "align_num_examples"):
            if getattr(self, name) < 1:
                fail(name, "must be a positive integer", f"set --{name} to 1 or more")
        for name in ("gamma", "gae_lambda", "cot_scale", "sft_wrong_action_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, "must lie in [0, 1]", f"set --{name} between 0 and 1")
        for name in ("align_projector_steps", "align_language_steps"):
            if getattr(self, name) < 0:
                fail(name, "must not be negative", f"set --{name} to 0 (no alignment) or more")
        if self.language_only and self.use_lora:
            fail("language_only", "excludes use_lora=True (LoRA already freezes the base model)",
                 "set --use_lora False with it, or drop --language_only")
        if not 0.0 <= self.lora_dropout < 1.0:
            fail("lora_dropout", "must lie in [0, 1)", "use e.g. 0.05")
        for name in ("temperature", "clip_range", "max_grad_norm", "learning_rate", "adam_epsilon"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                fail(name, "must be a positive finite number", f"set --{name} above 0")
        for name in ("vf_coef", "ent_coef", "kl_coef", "min_learning_rate", "weight_decay", "sft_learning_rate",
                     "invalid_action_penalty", "invalid_action_fallback", "final_eval_episodes", "history_steps"):
            if getattr(self, name) < 0:
                fail(name, "must not be negative", f"set --{name} to 0 or more")
        if self.kv_cache not in KV_CACHES:
            fail("kv_cache", "is not a cache kind", "use " + " or ".join(repr(kind) for kind in KV_CACHES))
        if self.min_learning_rate > self.learning_rate:
            fail("min_learning_rate", f"exceeds learning_rate={self.learning_rate}", "lower it (paper: 1e-9)")
        for name in ("clip_range_value", "target_kl", "value_head_learning_rate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                fail(name, "must be positive or None", f"set --{name} above 0 or to None")
        if self.sft_epochs <= 0:
            fail("sft_epochs", "must be positive", "use e.g. 3")
        if self.tiny_arch not in TINY_ARCHITECTURES:
            fail("tiny_arch", "is not a known tiny architecture", f"choose one of {TINY_ARCHITECTURES}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            fail("dtype", "is not supported", "choose auto, float32, bfloat16 or float16")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            fail("device", "is not a device", "choose auto, cpu or cuda")
        if self.algorithm not in ALGORITHMS:
            fail("algorithm", "is not an algorithm", f"choose one of {ALGORITHMS}")
        if self.group_size < 1:
            fail("group_size", "must be a positive integer", "set --group_size to 1 or more (8 in GiGPO's runs)")
        if self.algorithm != "ppo" and self.num_envs % self.group_size:
            fail("num_envs", f"is not a multiple of group_size={self.group_size}",
                 "set --num_envs to groups x group_size (each process runs whole groups)")
        if not 0.0 <= self.gigpo_gamma <= 1.0:
            fail("gigpo_gamma", "must lie in [0, 1]", "set --gigpo_gamma between 0 and 1 (paper: 0.95)")
        if self.gigpo_omega < 0:
            fail("gigpo_omega", "must not be negative", "set --gigpo_omega to 0 or more (paper: 1)")
        if self.loss_aggregation not in LOSS_AGGREGATIONS:
            fail("loss_aggregation", "is not an aggregation", f"choose one of {LOSS_AGGREGATIONS}")
        if self.invalid_action not in INVALID_ACTION_CHOICES:
            fail("invalid_action", "is not a policy", f"choose one of {INVALID_ACTION_CHOICES}")
        from vlm_agent.rollout.environments import check_invalid_action

        try:
            check_invalid_action(self.env_id, self.invalid_action)
        except ValueError as error:
            fail("invalid_action", "cannot play this env", str(error))
        if self.lr_scheduler not in ("cosine", "constant"):
            fail("lr_scheduler", "is not a schedule", "choose cosine or constant")
        if "/" not in self.env_id or not self.env_id.endswith(tuple(f"-v{i}" for i in range(10))):
            name = self.env_id.rsplit("/", 1)[-1]
            versioned = name if "-v" in name else f"{name}-v0"
            fix = f"use {'gym_cards/' + versioned!r}" if "/" not in self.env_id else "use e.g. gym_cards/NumberLine-v0"
            fail("env_id", "is not a namespaced, versioned Gymnasium id", fix)
        for target in self.report_targets:
            if target not in REPORT_TARGETS:
                fail("report_to", f"names unknown logger {target!r}", f"use none or {', '.join(REPORT_TARGETS)}")
        if self.resume and self.output_dir is None:
            fail("resume", "needs the run directory", "also pass --output_dir of the run to continue")
        # Critic-free rounds end with their episodes, so their size varies: the last mini-batch may be smaller.
        if not self.critic_free and (self.num_steps * self.num_envs) % self.mini_batch_size != 0:
            fail(
                "mini_batch_size",
                f"does not divide the rollout of num_steps*num_envs={self.num_steps * self.num_envs} samples",
                "choose a divisor of num_steps*num_envs",
            )
        self._validate_rollout_engine(fail)

    def _validate_rollout_engine(self, fail: Any) -> None:
        if self.rollout_engine not in ROLLOUT_ENGINES:
            fail("rollout_engine", "is not an engine", "choose hf or vllm")
        if self.old_log_probs not in ("trainer", "engine_tis"):
            fail("old_log_probs", "is not a source", "choose trainer or engine_tis")
        if not (self.tis_cap > 0 and math.isfinite(self.tis_cap)):
            fail("tis_cap", "must be a positive finite number", "use e.g. 2")
        if self.rollout_engine != "vllm":
            if self.old_log_probs != "trainer":
                fail("old_log_probs", "needs an engine outside the trainer", "add --rollout_engine vllm")
            return
        if not self.use_lora:
            fail("use_lora", "cannot go with --rollout_engine vllm: the vLLM engine syncs LoRA adapters only "
                 "(full-parameter weight sync is out of scope)", "train with --use_lora True, or use --rollout_engine hf")
        if self.lora_target_modules.strip() == "all-linear":
            fail("lora_target_modules", "also puts LoRA on the vision tower, which vLLM does not apply",
                 "name the language model's layers, e.g. --lora_target_modules q_proj,k_proj,v_proj,o_proj")

    @property
    def aligns_warm_start(self) -> bool:
        """True when the tiny warm start is aligned to read the image before its SFT (`align_*_steps`)."""
        return self.align_projector_steps > 0 or self.align_language_steps > 0

    def agent_settings(self) -> AgentSettings:
        """The settings this run (or its SFT warm start) acts with, saved next to its policy."""
        return AgentSettings(
            env_id=self.env_id, cot=self.use_cot, show_state=self.show_state,
            temperature=self.temperature, max_new_tokens=self.max_new_tokens,
            invalid_action=self.invalid_action,
            invalid_action_penalty=self.invalid_action_penalty,
            invalid_action_fallback=self.invalid_action_fallback, history_steps=self.history_steps,
        )

    @property
    def critic_free(self) -> bool:
        """True for the group-relative algorithms, which train no value head."""
        return self.algorithm != "ppo"

    @property
    def report_targets(self) -> list[str]:
        """Loggers named in `report_to`, without "none"."""
        names = [name.strip() for name in self.report_to.split(",") if name.strip()]
        return [name for name in names if name != "none"]

    def rollout_size(self, world_size: int = 1) -> int:
        """Environment steps collected per update over all processes: num_steps * num_envs * world_size."""
        return self.num_steps * self.num_envs * world_size

    def num_updates(self, world_size: int = 1) -> int:
        """Updates in the run: ceil(total_timesteps / rollout_size)."""
        return max(1, math.ceil(self.total_timesteps / self.rollout_size(world_size)))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (for YAML dumps and checkpoint metadata)."""
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
