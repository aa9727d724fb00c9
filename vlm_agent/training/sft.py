"""Supervised warm start: fine-tune a VLM on the environments' expert demonstrations.

The paper starts PPO from an SFT checkpoint (LLaVA-1.6 fine-tuned on task data); a random model
never writes parseable JSON, so RL would get no signal. `build_demonstrations` plays episodes,
and at every visited state records (image, prompt, answer), where the answer reads out the state
and reasons to the expert's action (`vlm_agent.prompting.env_prompts.expert_answer`). `wrong_action_rate`
replaces that share of the answers by an answer for a different legal action, which makes a
deliberately imperfect starting policy for PPO to improve.

`run_sft` trains with TRL's `SFTTrainer` on a conversational prompt-completion vision dataset
(`images`, `prompt`, `completion`): TRL renders the chat template, processes the images and
masks the prompt out of the loss (`completion_only_loss`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from vlm_agent.rollout.environments import EnvKwargs

#: Share of demonstration steps on which the behaviour policy moves at random (not the label):
#: it widens the states the demonstrations cover beyond the expert's own path.
EXPLORATION_RATE = 0.3


@dataclass
class VLMSFTConfig:
    """Options of `vlm-agent sft` (and of the warm start inside `vlm-agent train`)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Model to fine-tune (local directory); empty: build the tiny model `tiny_arch` first."},
    )
    tiny_arch: str = field(default="qwen2_vl", metadata={"help": "Tiny architecture built when no model is given."})
    env_id: str = field(default="gym_cards/NumberLine-v0", metadata={"help": "Environment whose expert is imitated."})
    env_kwargs: EnvKwargs = field(
        default_factory=EnvKwargs,
        metadata={
            "help": "Options of gymnasium.make(env_id, **env_kwargs), a JSON or YAML mapping, e.g. "
            "'{\"data_path\": \"my_games\"}' (ALFWorld games to demonstrate on); see VLMPPOConfig.env_kwargs."
        },
    )
    num_demos: int = field(default=256, metadata={"help": "Demonstration steps (one (image, prompt, answer) each)."})
    wrong_action_rate: float = field(
        default=0.0, metadata={"help": "Share of demonstrations whose answer picks a wrong legal action, in [0, 1]."}
    )
    use_cot: bool = field(default=True, metadata={"help": "Chain-of-thought answers (False: action-only answers)."})
    show_state: bool = field(
        default=False, metadata={"help": "Put the env's text description of the state in the prompt (see VLMPPOConfig)."}
    )
    history_steps: int = field(default=0, metadata={
        "help": "Earlier steps each demonstration's prompt recalls (K; see VLMPPOConfig.history_steps): train "
                "with the K the policy will play with."})
    epochs: float = field(default=3.0, metadata={"help": "Training epochs over the demonstrations."})
    learning_rate: float = field(default=3e-3, metadata={"help": "AdamW learning rate (tiny models: ~3e-3; 7B LoRA: ~2e-5)."})
    batch_size: int = field(default=8, metadata={"help": "Demonstrations per optimizer step."})
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters and merge them into the saved model."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank when use_lora."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha when use_lora."})
    language_only: bool = field(default=False, metadata={
        "help": "Train the language model's layers alone (word embeddings and vision side frozen): after "
                "`vlm-agent align`, so that the image tokens keep the meaning the alignment gave them."})
    seed: int = field(default=0, metadata={"help": "Seed of the demonstrations and of training."})
    output_dir: str = field(default="sft_model", metadata={"help": "Where the fine-tuned model and processor go."})
    progress_bar: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        if self.model_name_or_path == "":
            self.model_name_or_path = None
        self.env_kwargs = EnvKwargs(self.env_kwargs)
        if self.num_demos < 1:
            raise ValueError(f"VLMSFTConfig.num_demos={self.num_demos} must be >= 1; e.g. --num_demos 256")
        if not 0.0 <= self.wrong_action_rate <= 1.0:
            raise ValueError(
                f"VLMSFTConfig.wrong_action_rate={self.wrong_action_rate} must lie in [0, 1]; e.g. --wrong_action_rate 0.3"
            )
        if self.history_steps < 0:
            raise ValueError(f"VLMSFTConfig.history_steps={self.history_steps} must be >= 0; e.g. --history_steps 2")
        if self.language_only and self.use_lora:
            raise ValueError("VLMSFTConfig: language_only and use_lora exclude each other (LoRA already freezes the base)")
        if self.epochs <= 0 or self.learning_rate <= 0 or self.batch_size < 1:
            raise ValueError(
                "VLMSFTConfig needs epochs > 0, learning_rate > 0 and batch_size >= 1; got "
                f"epochs={self.epochs}, learning_rate={self.learning_rate}, batch_size={self.batch_size}"
            )


@dataclass
class SFTResult:
    """What `run_sft` returns."""

    model_dir: Path
    losses: list[float]
    num_demos: int
    wrong_actions: int

    @property
    def first_loss(self) -> float:
        return self.losses[0] if self.losses else math.nan

    @property
    def last_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan


@dataclass
class Demonstration:
    """One supervised example: the observation, the rendered prompt and the target answer."""

    image: np.ndarray
    prompt: str
    answer: str
    action: str
    expert_action: str


def build_demonstrations(
    env_id: str,
    num_demos: int,
    *,
    seed: int,
    use_cot: bool = True,
    wrong_action_rate: float = 0.0,
    show_state: bool = False,
    template: Any = None,
    env_kwargs: dict[str, Any] | None = None,
    history_steps: int = 0,
) -> list[Demonstration]:
    """Play episodes and record `num_demos` (image, prompt, answer) triples.

    The behaviour follows the expert, with a random legal move on `EXPLORATION_RATE` of the steps
    so that states off the expert's path are covered. Labels are the expert's answer, except for
    a `wrong_action_rate` share replaced by the answer for a uniformly chosen *other* legal action.
    Episode i resets with seed `seed + i` (training envs use small seeds too, evaluation uses
    `vlm_agent.rollout.loop.held_out_seed`, >= 10**9). `template` (a `PromptTemplate`) replaces the
    built-in prompt of `env_id` (then `use_cot` and `show_state` are the template's business).
    `env_kwargs` go to `gym.make` (ALFWorld: `data_path`, `task_types`, `split` choose the games the
    expert plays). Observations may be images or mappings holding one (ALFWorld's ``"image"``).
    `history_steps`: each prompt recalls the episode's last K steps (the moves played), as in training.
    """
    from vlm_agent.prompting.env_prompts import prompt_for
    from vlm_agent.prompting.invalid_actions import InvalidActionPolicy
    from vlm_agent.rollout.environments import check_env
    from vlm_agent.rollout.loop import AgentLoop, HeldOutEpisodes, make_env

    check_env(env_id, env_kwargs)
    if template is None:
        template = prompt_for(env_id, cot=use_cot, show_state=show_state, history_steps=history_steps)
    demonstrator = Demonstrator(template, np.random.default_rng(seed), wrong_action_rate)
    # Episode i resets with seed + i; the loop runs until enough demonstrations are recorded.
    loop = AgentLoop([make_env(env_id, env_kwargs)], template, InvalidActionPolicy("random"),
                     HeldOutEpisodes(num_demos, seed, seed_of=lambda run_seed, episode: run_seed + episode))
    try:
        while len(demonstrator.demos) < num_demos:
            (step,) = loop.step(demonstrator)
            if step.action.invalid or step.action.index != demonstrator.moves[-1]:
                raise RuntimeError(f"the parser read the demonstrator's move {step.text!r} as "
                                   f"{step.action.index}, not {demonstrator.moves[-1]}")
    finally:
        loop.close()
    return demonstrator.demos[:num_demos]


class Demonstrator:
    """The behaviour that plays while demonstrations are recorded, as an agent of the one loop.

    Each step it records the demonstration of the state it is shown (the expert's answer, or on a
    `wrong_action_rate` share the answer for a uniformly chosen *other* legal action), then plays
    the expert's move, or a random legal one on `EXPLORATION_RATE` of the steps.
    """

    name = "demonstrator"
    uses_expert_action = True

    def __init__(self, template: Any, rng: np.random.Generator, wrong_action_rate: float) -> None:
        self.template = template
        self.rng = rng
        self.wrong_action_rate = wrong_action_rate
        self.demos: list[Demonstration] = []
        self.moves: list[int] = []

    def respond(self, inputs: Any) -> list[str]:
        from vlm_agent.prompting.env_prompts import answer_from_info

        answers = []
        for agent_input in inputs:
            rng, legal = self.rng, agent_input.legal_actions
            expert_index = int(agent_input.expert_action)
            label_index = expert_index
            if len(legal) > 1 and rng.random() < self.wrong_action_rate:
                others = [i for i in range(len(legal)) if i != expert_index]
                label_index = int(rng.choice(others))
            answer = answer_from_info(self.template, agent_input.info, legal[label_index])
            self.demos.append(Demonstration(agent_input.image, agent_input.prompt, answer, legal[label_index],
                                            legal[expert_index]))
            move = int(rng.integers(len(legal))) if rng.random() < EXPLORATION_RATE else expert_index
            self.moves.append(move)
            answers.append(json.dumps({"action": legal[move]}))
        return answers

    def usage(self) -> Any:
        from vlm_agent.rollout.agent import TokenUsage

        return TokenUsage()

    def close(self) -> None:
        """Nothing to release."""


def demonstrations_dataset(demos: list[Demonstration]):
    """A `datasets.Dataset` in TRL's conversational prompt-completion vision format."""
    from datasets import Dataset
    from PIL import Image

    from vlm_agent.prompting.templates import chat_messages

    return Dataset.from_list(
        [
            {
                "images": [Image.fromarray(demo.image)],
                "prompt": chat_messages(demo.prompt),
                "completion": [{"role": "assistant", "content": [{"type": "text", "text": demo.answer}]}],
            }
            for demo in demos
        ]
    )


def run_sft(config: VLMSFTConfig) -> SFTResult:
    """Build demonstrations and fine-tune with `trl.SFTTrainer`; save model + processor to `output_dir`."""
    import torch
    from peft import LoraConfig
    from transformers import PrinterCallback, ProgressCallback
    from trl import SFTConfig, SFTTrainer

    from vlm_agent.models.loading import load_pretrained_model, load_processor
    from vlm_agent.rollout.environments import check_env

    check_env(config.env_id, config.env_kwargs)  # before any model is built
    output_dir = Path(config.output_dir)
    model_path = config.model_name_or_path
    if model_path is None:
        raise ValueError(
            "run_sft needs a model (model_name_or_path); `vlm-agent sft` without one first builds the tiny model "
            "(vlm_agent.demo.tiny_models.make_tiny_model)"
        )
    demos = build_demonstrations(
        config.env_id, config.num_demos, seed=config.seed, use_cot=config.use_cot,
        wrong_action_rate=config.wrong_action_rate, show_state=config.show_state, env_kwargs=config.env_kwargs,
        history_steps=config.history_steps,
    )
    dataset = demonstrations_dataset(demos)
    processor = load_processor(model_path)
    model = load_pretrained_model(model_path, dtype=torch.float32)
    if config.language_only:
        from vlm_agent.models.freezing import language_parameters, train_only

        train_only(model, language_parameters(model))
    use_cpu = not torch.cuda.is_available()
    arguments = SFTConfig(
        output_dir=str(output_dir / "trainer"),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=1,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        max_length=None,  # never cut image placeholder tokens
        completion_only_loss=True,
        use_cpu=use_cpu,
        bf16=False,
        dataloader_num_workers=0,
        disable_tqdm=not config.progress_bar,
        # TRL turns activation checkpointing on by default: it saves memory on a GPU but recomputes every
        # forward, which only costs time for the small models a warm start on CPU uses.
        **_no_activation_checkpointing(),
    )
    peft_config = None
    if config.use_lora:
        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    trainer = SFTTrainer(
        model=model, args=arguments, train_dataset=dataset, processing_class=processor, peft_config=peft_config
    )
    # Transformers prints every logged dict (one line per step here); show one bar with the loss instead.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_loss_bar_callback(enabled=config.progress_bar))
    trainer.train()
    losses = [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    trained = trainer.model
    if config.use_lora:
        trained = trained.merge_and_unload()
    output_dir.mkdir(parents=True, exist_ok=True)
    trained.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    wrong = sum(demo.action != demo.expert_action for demo in demos)
    summary = {"config": asdict(config), "losses": losses, "num_demos": len(demos), "wrong_actions": wrong}
    (output_dir / "sft_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    from vlm_agent.agents.settings import AgentSettings, write_agent_settings

    # The prompt the model was taught; `vlm-agent eval` uses it unless told otherwise.
    write_agent_settings(output_dir, AgentSettings(env_id=config.env_id, cot=config.use_cot,
                                                   show_state=config.show_state, history_steps=config.history_steps))
    return SFTResult(model_dir=output_dir, losses=losses, num_demos=len(demos), wrong_actions=wrong)


def _no_activation_checkpointing() -> dict[str, bool]:
    """The TrainingArguments option that turns activation checkpointing off, under its current name
    (transformers 5 renamed ``gradient_checkpointing`` to ``activation_checkpointing``)."""
    from trl import SFTConfig

    names = {f.name for f in fields(SFTConfig)}
    return {"activation_checkpointing": False} if "activation_checkpointing" in names else {"gradient_checkpointing": False}


def _loss_bar_callback(enabled: bool) -> Any:
    """A TrainerCallback drawing one tqdm bar over SFT steps with the latest loss (transformers imported lazily)."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    from vlm_agent.training.interrupts import check_signals

    class LossBar(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, desc="SFT warm start", unit="step", disable=not enabled)

        def on_step_end(self, args, state, control, **kwargs):
            check_signals()  # a Ctrl-C that native code swallowed stops the warm start here
            self.bar.update(1)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}")

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    return LossBar()


def summarize_demonstrations(demos: list[Demonstration]) -> dict[str, Any]:
    """Counts of labels and of deliberately wrong labels (for logs and tests)."""
    return {
        "demos": len(demos),
        "wrong": sum(demo.action != demo.expert_action for demo in demos),
        "actions": {action: sum(demo.action == action for demo in demos) for action in sorted({d.action for d in demos})},
    }
