"""Vision-language alignment: teach a (tiny) VLM to read the game state from the image.

A randomly initialised model does not read its image: PPO and SFT on CPU could only learn with
the state written into the prompt as text (``show_state``). This stage gives it working eyes
before any task training, like LLaVA's first stage (image -> caption, the vision side trained
first, then the whole model), with the state's read-out as the caption:

    image of a NumberLine state  ->  {"current number": "1", "target number": "3"}
    image of a Blackjack hand    ->  {"dealer card": "4 of clubs", "player cards": [...], "player total": "14"}

The read-out keys and values are exactly those the task's CoT answer starts with (the built-in
template's ``readout`` fields, values from the env's ``info``), so what the model learns here is
what the warm start and PPO need. The images are states of many random episodes (the reset seed
and a few random moves); held-out states use :func:`vlm_agent.evaluation.held_out_seed`.

:func:`readout_accuracy` measures the read-out from the image alone (greedy decoding, each field
compared exactly); ``blank=True`` replaces every image by a frame of its background colour, the
control that must fall to chance if the model really reads the image.

    vlm-agent align --output_dir aligned_tiny      # builds a legible tiny qwen2_vl first

Same ``seed`` -> same examples, same batches, same weights.

Status: at the defaults (800 whole-model steps, lr 3e-3, batch 16) the tiny 2M-parameter
``qwen2_vl`` learns the answer format within ~50 steps but its NumberLine read-out stays at chance,
the same with a blank image (benchmarks/results/tiny_vlm_readout.md): the loss sits at the
digits' chance level, like the text-state SFT before it learns to copy (~500 steps there). Training
the vision side alone against the random language model (``vision_steps``) did not even learn the
format (loss 6.8 -> 6.2 in 50 steps); it is meant for a pretrained language model, as in LLaVA.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The instruction of every alignment example (one fixed caption prompt, as in LLaVA's stage 1).
READOUT_PROMPT = "Read out the game state shown in the image as JSON."

#: Environments whose images the default alignment covers.
DEFAULT_ALIGN_ENVS = ("gym_cards/NumberLine-v0", "gym_cards/Blackjack-v0")

#: Parameter-name parts of the vision tower and the projector of the five tiny architectures
#: (Qwen's ``visual`` holds its merger; LLaVA-NeXT's projector; Idefics3's connector; Gemma 3's
#: projector). Stage 1 trains only these.
VISION_PARAMETER_PARTS = ("visual.", "vision_tower.", "vision_model.", "multi_modal_projector.", "connector.",
                          "image_newline")


@dataclass(frozen=True)
class ReadoutExample:
    """One image of an env state and its true read-out (``values``: read-out key -> value)."""

    env_id: str
    image: np.ndarray
    values: dict[str, Any]

    @property
    def answer(self) -> str:
        return json.dumps(self.values, ensure_ascii=False)


def readout_values(env_id: str, info: dict[str, Any]) -> dict[str, Any]:
    """The read-outs of the built-in CoT answer of ``env_id`` for the state ``info`` describes."""
    from vlm_agent.prompts import prompt_for

    return {f.key: f.value_from_info(info) for f in prompt_for(env_id, cot=True).readout}


def readout_examples(
    env_id: str, count: int, *, seed: int, max_random_moves: int = 3, first_episode: int = 0
) -> list[ReadoutExample]:
    """Images of ``count`` states of ``env_id``: episode ``i`` resets with ``seed + first_episode + i``
    and makes 0..``max_random_moves`` random legal moves (stopping at the last state before the
    episode ends: the agent never acts on a final frame)."""
    import gymnasium as gym

    import gym_cards  # noqa: F401

    rng = np.random.default_rng([seed, first_episode, count])
    env = gym.make(env_id)
    examples: list[ReadoutExample] = []
    for index in range(count):
        observation, info = env.reset(seed=seed + first_episode + index)
        for _ in range(int(rng.integers(0, max_random_moves + 1))):
            legal = env.unwrapped.legal_actions()
            moved, _, terminated, truncated, moved_info = env.step(int(rng.integers(len(legal))))
            if terminated or truncated:
                break
            observation, info = moved, moved_info
        examples.append(ReadoutExample(env_id, np.asarray(observation).copy(), readout_values(env_id, info)))
    env.close()
    return examples


def held_out_examples(env_id: str, count: int, *, seed: int) -> list[ReadoutExample]:
    """States from the evaluation seeds (>= 10**9), never seen by :func:`readout_examples` training."""
    from vlm_agent.evaluation import held_out_seed

    return readout_examples(env_id, count, seed=held_out_seed(seed, 0), max_random_moves=3)


def blank_like(image: np.ndarray) -> np.ndarray:
    """A frame of the image's background colour (its top-left pixel): the same size, no content."""
    return np.broadcast_to(image[:1, :1], image.shape).copy()


def vision_parameters(model: Any) -> list[Any]:
    """The vision tower's and projector's parameters (see :data:`VISION_PARAMETER_PARTS`)."""
    chosen = [p for name, p in model.named_parameters() if any(part in name for part in VISION_PARAMETER_PARTS)]
    if not chosen:
        raise ValueError(f"found no vision parameters in {type(model).__name__} (looked for {VISION_PARAMETER_PARTS})")
    return chosen


def _prompt_inputs(processor: Any, images: Sequence[np.ndarray]) -> dict[str, Any]:
    from vlm_agent.prompts import chat_messages

    text = processor.apply_chat_template(chat_messages(READOUT_PROMPT), tokenize=False, add_generation_prompt=True)
    return dict(processor(images=[[image] for image in images], text=[text] * len(images), return_tensors="pt",
                          padding=True))


def _eos_id(processor: Any) -> int:
    return int(processor.tokenizer.eos_token_id)


def readout_loss(model: Any, processor: Any, examples: Sequence[ReadoutExample]) -> Any:
    """Mean cross-entropy of the read-out answers (and EOS) given image + :data:`READOUT_PROMPT`."""
    import torch

    from vlm_agent.policy import uses_multimodal_rope

    inputs = _prompt_inputs(processor, [e.image for e in examples])
    tokenizer = processor.tokenizer
    answers = [tokenizer(e.answer, add_special_tokens=False)["input_ids"] + [_eos_id(processor)] for e in examples]
    length = max(len(a) for a in answers)
    targets = torch.full((len(answers), length), int(tokenizer.pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(answers), length), dtype=torch.bool)
    for row, ids in enumerate(answers):
        targets[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = True
    inputs["input_ids"] = torch.cat([inputs["input_ids"], targets], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], mask.long()], dim=1)
    for key in ("mm_token_type_ids", "token_type_ids"):  # per-token side inputs cover the answer too
        if key in inputs:
            inputs[key] = torch.cat([inputs[key], torch.zeros_like(targets)], dim=1)
    if not uses_multimodal_rope(model):
        inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    logits = model(**inputs, use_cache=False, logits_to_keep=length + 1).logits[:, :-1]
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                               reduction="none").view_as(targets)
    return (losses * mask).sum() / mask.sum()


def train_readout(
    model: Any,
    processor: Any,
    examples: Sequence[ReadoutExample],
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    vision_only: bool,
    log: Any = None,
) -> list[float]:
    """AdamW on :func:`readout_loss` over random batches of ``examples``; returns the step losses.

    ``vision_only`` trains the vision tower and projector alone (stage 1), else every parameter.
    The learning rate warms up over the first 10% of the steps and decays by a cosine.
    """
    import torch

    if steps <= 0:
        return []
    parameters = vision_parameters(model) if vision_only else [p for p in model.parameters()]
    chosen = {id(p) for p in parameters}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps))),
    )
    rng = np.random.default_rng(seed)
    model.train()
    losses: list[float] = []
    order = rng.permutation(len(examples))
    cursor = 0
    for step in range(steps):
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(examples)), 0
        batch = [examples[i] for i in order[cursor : cursor + batch_size]]
        cursor += batch_size
        loss = readout_loss(model, processor, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if log is not None:
            log(step, float(loss.detach()))
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return losses


def generate_readouts(model: Any, processor: Any, images: Sequence[np.ndarray], *, max_new_tokens: int = 64,
                      batch_size: int = 32) -> list[str]:
    """Greedy answers to :data:`READOUT_PROMPT` for each image."""
    import torch

    from vlm_agent.policy import suppressed_special_ids

    eos = _eos_id(processor)
    suppressed = suppressed_special_ids(processor, [eos])
    texts: list[str] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            inputs = _prompt_inputs(processor, images[start : start + batch_size])
            out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos,
                                 pad_token_id=int(processor.tokenizer.pad_token_id), suppress_tokens=suppressed)
            texts += processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts


def _parsed(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text.strip())
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ReadoutAccuracy:
    """Share of held-out images whose read-out field matched exactly, per field, plus per-card rates.

    ``chance`` is the accuracy of the best constant answer per field (the share of the most frequent
    true value): a model that ignores the image can do no better on average.
    """

    env_id: str
    images: int
    blank: bool
    fields: dict[str, float]
    chance: dict[str, float]
    items: dict[str, float]
    parsed: float


def readout_accuracy(model: Any, processor: Any, examples: Sequence[ReadoutExample], *, blank: bool = False,
                     max_new_tokens: int = 64) -> ReadoutAccuracy:
    """Read-out accuracy from the image alone (``blank``: from a background-coloured frame instead)."""
    if not examples:
        raise ValueError("readout_accuracy needs at least one example")
    images = [blank_like(e.image) if blank else e.image for e in examples]
    answers = [_parsed(t) for t in generate_readouts(model, processor, images, max_new_tokens=max_new_tokens)]
    keys = list(examples[0].values)
    fields_: dict[str, float] = {}
    chance: dict[str, float] = {}
    items: dict[str, float] = {}
    for key in keys:
        truths = [e.values[key] for e in examples]
        fields_[key] = float(np.mean([a.get(key) == t for a, t in zip(answers, truths)]))
        labels = [json.dumps(t) for t in truths]
        chance[key] = max(labels.count(label) for label in set(labels)) / len(labels)
        if isinstance(truths[0], list):
            # Each listed item (a player's card) at its position: partial credit for long hands.
            hits = total = 0
            for answer, truth in zip(answers, truths):
                guess = answer.get(key) if isinstance(answer.get(key), list) else []
                hits += sum(1 for i, item in enumerate(truth) if i < len(guess) and guess[i] == item)
                total += len(truth)
            items[key] = hits / total
    return ReadoutAccuracy(examples[0].env_id, len(examples), blank, fields_, chance, items,
                           float(np.mean([bool(a) for a in answers])))


@dataclass
class VLMAlignConfig:
    """Options of `vlm-agent align` (read-out alignment before SFT and PPO)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Model to align (local directory); empty: build a legible tiny `tiny_arch` model first."},
    )
    tiny_arch: str = field(default="qwen2_vl", metadata={"help": "Tiny architecture built when no model is given."})
    env_ids: list[str] = field(default_factory=lambda: list(DEFAULT_ALIGN_ENVS),
                               metadata={"help": "Environments whose state images are read out."})
    num_examples: int = field(default=1024, metadata={"help": "Training images per environment."})
    vision_steps: int = field(default=0, metadata={"help": "Stage 1: steps training the vision tower + projector."})
    full_steps: int = field(default=800, metadata={"help": "Stage 2: steps training the whole model."})
    learning_rate: float = field(default=3e-3, metadata={"help": "AdamW peak learning rate of both stages."})
    batch_size: int = field(default=16, metadata={"help": "Images per optimizer step."})
    eval_examples: int = field(default=0, metadata={"help": "Held-out images per env to measure the read-out on (0: none)."})
    seed: int = field(default=0, metadata={"help": "Seed of the tiny model, the images and the batches."})
    output_dir: str = field(default="aligned_model", metadata={"help": "Where the aligned model and processor go."})
    progress_bar: bool = field(default=True, metadata={"help": "Show a progress bar."})

    def __post_init__(self) -> None:
        if self.model_name_or_path == "":
            self.model_name_or_path = None
        from vlm_agent.prompts import known_env_ids, prompt_for

        for env_id in self.env_ids:
            if env_id not in known_env_ids() or not prompt_for(env_id, cot=True).readout:
                readable = [e for e in known_env_ids() if prompt_for(e, cot=True).readout]
                raise ValueError(f"VLMAlignConfig.env_ids: {env_id!r} has no built-in read-out; choose from {readable}")
        if self.num_examples < 1 or self.batch_size < 1 or self.vision_steps < 0 or self.full_steps < 0:
            raise ValueError(
                "VLMAlignConfig needs num_examples >= 1, batch_size >= 1, vision_steps >= 0 and full_steps >= 0; got "
                f"{self.num_examples}, {self.batch_size}, {self.vision_steps}, {self.full_steps}"
            )
        if self.learning_rate <= 0 or self.eval_examples < 0:
            raise ValueError(f"VLMAlignConfig needs learning_rate > 0 and eval_examples >= 0, got "
                             f"{self.learning_rate}, {self.eval_examples}")


@dataclass
class AlignResult:
    """What :func:`run_alignment` returns: the saved model, the losses of both stages, held-out read-outs."""

    model_dir: Path
    vision_losses: list[float]
    full_losses: list[float]
    accuracy: list[ReadoutAccuracy]


def run_alignment(config: VLMAlignConfig) -> AlignResult:
    """Align ``config.model_name_or_path`` (or a new legible tiny model) and save it to ``output_dir``."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForImageTextToText

    from vlm_agent.models import load_processor

    output_dir = Path(config.output_dir)
    model_path = config.model_name_or_path
    if model_path is None:
        from vlm_agent.tiny_models import LEGIBLE_VISION, make_tiny_model

        model_path = str(make_tiny_model(config.tiny_arch, output_dir / "tiny_random_model", seed=config.seed,
                                         vision=LEGIBLE_VISION))
    processor = load_processor(model_path)
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32)
    examples = [e for env_id in config.env_ids
                for e in readout_examples(env_id, config.num_examples, seed=config.seed)]
    bar = tqdm(total=config.vision_steps + config.full_steps, desc="alignment", unit="step",
               disable=not config.progress_bar)

    def log(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        common = {"learning_rate": config.learning_rate, "batch_size": config.batch_size, "log": log}
        vision_losses = train_readout(model, processor, examples, steps=config.vision_steps, seed=config.seed,
                                      vision_only=True, **common)
        full_losses = train_readout(model, processor, examples, steps=config.full_steps, seed=config.seed + 1,
                                    vision_only=False, **common)
    bar.close()
    accuracy = []
    for env_id in config.env_ids if config.eval_examples else ():
        held_out = held_out_examples(env_id, config.eval_examples, seed=config.seed)
        accuracy += [readout_accuracy(model, processor, held_out, blank=blank) for blank in (False, True)]
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    summary = {"config": asdict(config), "vision_losses": vision_losses, "full_losses": full_losses,
               "accuracy": [asdict(a) for a in accuracy]}
    (output_dir / "align_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return AlignResult(output_dir, vision_losses, full_losses, accuracy)
