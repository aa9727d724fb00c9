"""Read-out data and measurement for the alignment: images of env states and the read-outs the
task's CoT answer starts with (``{"current number": "1", ...}``), the teacher-forced loss, and the
read-out accuracy on held-out states (optionally from blank frames).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlm_agent.agents.blank import blank_like

#: The instruction of every alignment example (one fixed caption prompt, as in LLaVA's stage 1).
READOUT_PROMPT = "Read out the game state shown in the image as JSON."

#: Environments whose images the default alignment covers. NumberLine alone: Blackjack needs its own
#: settings (4096 images, projector_fit, 1500 language steps, output_norm_lr_factor 10: player cards
#: 90.3% per card, benchmarks/results/tiny_vlm_readout_blackjack.md), and aligning both together left
#: NumberLine at chance (23% / 19%, an earlier recipe).
DEFAULT_ALIGN_ENVS = ("gym_cards/NumberLine-v0",)


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
    from vlm_agent.prompting.env_prompts import prompt_for

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
    from vlm_agent.rollout.loop import held_out_seed

    return readout_examples(env_id, count, seed=held_out_seed(seed, 0), max_random_moves=3)


def warmup_cosine(optimizer: Any, steps: int) -> Any:
    """The alignment's schedule: linear warm-up over the first 10% of ``steps``, then a cosine decay."""
    import torch

    warmup = max(1, steps // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps))),
    )


def _prompt_inputs(processor: Any, images: Sequence[np.ndarray], prompts: Sequence[str] | None = None) -> dict[str, Any]:
    from vlm_agent.prompting.templates import chat_messages

    prompts = [READOUT_PROMPT] * len(images) if prompts is None else list(prompts)
    texts = [processor.apply_chat_template(chat_messages(p), tokenize=False, add_generation_prompt=True) for p in prompts]
    return dict(processor(images=[[image] for image in images], text=texts, return_tensors="pt", padding=True))


def _eos_id(processor: Any) -> int:
    return int(processor.tokenizer.eos_token_id)


def readout_inputs(
    processor: Any,
    examples: Sequence[ReadoutExample],
    *,
    images: Sequence[np.ndarray] | None = None,
    prompts: Sequence[str] | None = None,
) -> tuple[dict[str, Any], Any, Any]:
    """Model inputs of prompt + read-out answer (+ EOS), the answer ids and their mask.

    ``images`` replaces the examples' images (e.g. blank frames), ``prompts`` the instruction
    (default :data:`READOUT_PROMPT` for every example).
    """
    import torch

    inputs = _prompt_inputs(processor, [e.image for e in examples] if images is None else images, prompts)
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
    return inputs, targets, mask


def answer_loss(model: Any, inputs: dict[str, Any], targets: Any, mask: Any) -> tuple[Any, Any]:
    """Mean cross-entropy of the answer tokens, and per row whether every answer token is the argmax.

    A row whose answer tokens are all the argmax under teacher forcing is exactly what greedy
    decoding writes, so the second value is the greedy exact-match of the whole read-out.
    """
    import torch

    from vlm_agent.models.policy import uses_multimodal_rope

    length = targets.shape[1]
    if not uses_multimodal_rope(model):
        inputs = {**inputs, "position_ids": (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)}
    logits = model(**inputs, use_cache=False, logits_to_keep=length + 1).logits[:, :-1]
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                               reduction="none").view_as(targets)
    exact = ((logits.argmax(-1) == targets) | ~mask).all(dim=1)
    return (losses * mask).sum() / mask.sum(), exact


def readout_loss(model: Any, processor: Any, examples: Sequence[ReadoutExample]) -> Any:
    """Mean cross-entropy of the read-out answers (and EOS) given image + :data:`READOUT_PROMPT`."""
    return answer_loss(model, *readout_inputs(processor, examples))[0]


def generate_readouts(model: Any, processor: Any, images: Sequence[np.ndarray], *, max_new_tokens: int,
                      batch_size: int = 32) -> list[str]:
    """Greedy answers to :data:`READOUT_PROMPT` for each image."""
    import torch

    from vlm_agent.models.sampler import suppressed_special_ids

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
                     max_new_tokens: int | None = None) -> ReadoutAccuracy:
    """Read-out accuracy from the image alone (``blank``: from a background-coloured frame instead).

    ``max_new_tokens``: the answer length allowed; default the longest true answer's tokens plus 8
    (a Blackjack read-out of four cards takes 65 tokens).
    """
    if not examples:
        raise ValueError("readout_accuracy needs at least one example")
    if max_new_tokens is None:
        tokenizer = processor.tokenizer
        max_new_tokens = 8 + max(len(tokenizer(e.answer, add_special_tokens=False)["input_ids"]) for e in examples)
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
