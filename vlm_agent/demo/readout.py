"""Read-out data and measurement for the alignment: images of env states and the read-outs the
task's CoT answer starts with (``{"current number": "1", ...}``), the teacher-forced loss, and the
read-out accuracy on held-out states (from the image, a blank frame, or another state's image).

Training and held-out states are disjoint by construction (:func:`state_split`): an env that
takes a ``split`` option (NumberLine) plays its ``"train"`` or ``"eval"`` states; for the others a
state belongs to the evaluation side when the hash of its deal (a formula game's cards; Blackjack's
whole read-out) says so, and each side skips the other's states.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
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


#: The share of read-out values (by hash) held out for evaluation in envs without a ``split`` option.
HASH_EVAL_SHARE = 5  # one in five


#: Read-out keys that make a state's deal: a formula game's (EZPoints, Points24) states are split by
#: their cards alone, so an evaluation deal is never seen in training with any formula.
DEAL_KEYS = ("cards",)


def evaluation_state(values: Mapping[str, Any]) -> bool:
    """Whether a state with these read-out values is an evaluation state (envs without ``split``):
    ``crc32`` of the sorted JSON of its deal (:data:`DEAL_KEYS`; the whole read-out for an env with
    none, e.g. Blackjack) is 0 mod :data:`HASH_EVAL_SHARE` (a fifth of the deals). EZPoints has 13
    deals: [2, 10] and [6, 6] are its evaluation deals (each card value occurs in training in
    other deals; 10 only as the first card)."""
    deal = {key: values[key] for key in DEAL_KEYS if key in values} or dict(values)
    return zlib.crc32(json.dumps(deal, sort_keys=True).encode()) % HASH_EVAL_SHARE == 0


def state_split(env_id: str, env_kwargs: Mapping[str, Any] | None, side: str) -> tuple[dict[str, Any], bool]:
    """How to draw ``side``'s ("train" or "eval") states of ``env_id``: the env options to make it
    with, and whether states must still be filtered by :func:`evaluation_state`.

    An env that takes ``split`` (NumberLine: :func:`gym_cards.envs.number_line.evaluation_pair`)
    gets ``split=side`` and no filter; the others are filtered by :func:`evaluation_state` (a hash of the read-out, of a formula game's cards alone).
    """
    from vlm_agent.rollout.environments import check_env

    if side not in ("train", "eval"):
        raise ValueError(f"state_split side must be 'train' or 'eval', got {side!r}")
    options = dict(env_kwargs or {})
    try:
        check_env(env_id, {**options, "split": side})
    except ValueError:
        options.pop("split", None)
        return options, True
    return {**options, "split": side}, False


def readout_examples(
    env_id: str, count: int, *, seed: int, max_random_moves: int = 3, first_episode: int = 0,
    env_kwargs: Mapping[str, Any] | None = None, side: str = "train",
) -> list[ReadoutExample]:
    """Images of ``count`` states of ``env_id`` (made with ``env_kwargs``) from ``side``'s states
    (:func:`state_split`): episode ``i`` resets with ``seed + first_episode + i`` and makes
    0..``max_random_moves`` random legal moves (stopping at the last state before the episode
    ends: the agent never acts on a final frame); a state of the other side is skipped and the
    next episode drawn."""
    import gymnasium as gym

    import gym_cards  # noqa: F401

    options, filtered = state_split(env_id, env_kwargs, side)
    rng = np.random.default_rng([seed, first_episode, count])
    env = gym.make(env_id, **options)
    examples: list[ReadoutExample] = []
    index = 0
    while len(examples) < count:
        if index >= 100 * count + 1000:
            raise ValueError(f"{env_id} gave too few {side} states for {count} read-out images")
        observation, info = env.reset(seed=seed + first_episode + index)
        index += 1
        for _ in range(int(rng.integers(0, max_random_moves + 1))):
            legal = env.unwrapped.legal_actions()
            moved, _, terminated, truncated, moved_info = env.step(int(rng.integers(len(legal))))
            if terminated or truncated:
                break
            observation, info = moved, moved_info
        values = readout_values(env_id, info)
        if filtered and evaluation_state(values) != (side == "eval"):
            continue
        examples.append(ReadoutExample(env_id, np.asarray(observation).copy(), values))
    env.close()
    return examples


def held_out_examples(env_id: str, count: int, *, seed: int,
                      env_kwargs: Mapping[str, Any] | None = None) -> list[ReadoutExample]:
    """Evaluation states (``side="eval"``: disjoint from any training image's by construction),
    dealt from the evaluation seeds (>= 10**9)."""
    from vlm_agent.rollout.loop import held_out_seed

    return readout_examples(env_id, count, seed=held_out_seed(seed, 0), max_random_moves=3,
                            env_kwargs=env_kwargs, side="eval")


def distinct_states(examples: Sequence[ReadoutExample]) -> int:
    """How many different read-outs (states) ``examples`` hold."""
    return len({json.dumps(e.values, sort_keys=True) for e in examples})


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


#: What :func:`readout_accuracy` shows the model: each example's own image, a frame of its
#: background colour, or the image of another state (same prompt: does the answer follow the picture?).
CONTROLS = ("image", "blank", "other state")


def other_state_images(examples: Sequence[ReadoutExample]) -> list[np.ndarray]:
    """For each example the image of the next example (cyclically) whose read-out differs from its own."""
    images = []
    for i, example in enumerate(examples):
        for shift in range(1, len(examples)):
            other = examples[(i + shift) % len(examples)]
            if other.values != example.values:
                images.append(other.image)
                break
        else:
            raise ValueError("the other-state control needs examples of at least two different states")
    return images


@dataclass(frozen=True)
class ReadoutAccuracy:
    """Share of held-out images whose read-out field matched exactly, per field, plus per-card rates.

    ``chance`` is the accuracy of the best constant answer per field (the share of the most frequent
    true value): a model that ignores the image can do no better on average. ``control``: what the
    model was shown (:data:`CONTROLS`); ``states``: how many different states the examples hold.
    """

    env_id: str
    images: int
    control: str
    fields: dict[str, float]
    chance: dict[str, float]
    items: dict[str, float]
    parsed: float
    states: int = 0

    @property
    def blank(self) -> bool:
        return self.control == "blank"


def readout_accuracy(model: Any, processor: Any, examples: Sequence[ReadoutExample], *, control: str = "image",
                     max_new_tokens: int | None = None) -> ReadoutAccuracy:
    """Read-out accuracy from the image alone; ``control="blank"``: from a background-coloured frame
    instead, ``"other state"``: from another example's image (:func:`other_state_images`), scored
    against the example's own state.

    ``max_new_tokens``: the answer length allowed; default the longest true answer's tokens plus 8
    (a Blackjack read-out of four cards takes 65 tokens).
    """
    if not examples:
        raise ValueError("readout_accuracy needs at least one example")
    if control not in CONTROLS:
        raise ValueError(f"readout_accuracy control must be one of {CONTROLS}, got {control!r}")
    if max_new_tokens is None:
        tokenizer = processor.tokenizer
        max_new_tokens = 8 + max(len(tokenizer(e.answer, add_special_tokens=False)["input_ids"]) for e in examples)
    images = {"image": lambda: [e.image for e in examples],
              "blank": lambda: [blank_like(e.image) for e in examples],
              "other state": lambda: other_state_images(examples)}[control]()
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
    return ReadoutAccuracy(examples[0].env_id, len(examples), control, fields_, chance, items,
                           float(np.mean([bool(a) for a in answers])), distinct_states(examples))
