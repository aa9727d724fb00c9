"""The tiny models' tokenizer: a byte-level BPE trained offline on the prompts and answers of every
built-in environment, with a chat template per architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
)

from vlm_agent.training.interrupts import check_signals
from vlm_agent.training.ppo_config import TINY_ARCHITECTURES


@dataclass(frozen=True)
class _TokenSpec:
    """Special tokens of one architecture's tokenizer; ``named`` become tokenizer attributes."""

    pad: str
    eos: str
    bos: str | None = None
    unk: str | None = None
    named: dict[str, str] = field(default_factory=dict)
    other: tuple[str, ...] = ()

    def all_special(self) -> list[str]:
        tokens = [self.pad, self.eos, *(t for t in (self.bos, self.unk) if t is not None)]
        tokens += [t for t in (*self.named.values(), *self.other) if t not in tokens]
        return tokens


_QWEN_TOKENS = _TokenSpec(
    pad="<|endoftext|>",
    eos="<|im_end|>",
    named={
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "vision_start_token": "<|vision_start|>",
        "vision_end_token": "<|vision_end|>",
    },
    other=("<|im_start|>",),
)
_TOKENS = {
    "qwen2_vl": _QWEN_TOKENS,
    "qwen2_5_vl": _QWEN_TOKENS,
    "llava_next": _TokenSpec(pad="<pad>", eos="</s>", bos="<s>", unk="<unk>", named={"image_token": "<image>"}),
    "idefics3": _TokenSpec(
        pad="<|endoftext|>",
        eos="<end_of_utterance>",
        bos="<|im_start|>",
        named={"image_token": "<image>"},
        other=("<fake_token_around_image>", "<global-img>"),
    ),
    "gemma3": _TokenSpec(
        pad="<pad>",
        eos="<end_of_turn>",
        bos="<bos>",
        unk="<unk>",
        named={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
        other=("<start_of_turn>",),
    ),
}

_QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Mistral-style [INST] format of llava-v1.6-mistral.
_LLAVA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %} [/INST]"
    "{% else %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}</s>"
    "{% endif %}"
    "{% endfor %}"
)
# SmolVLM / Idefics3 format: "User:<image>text<end_of_utterance>\nAssistant: answer<end_of_utterance>".
_IDEFICS3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %} {{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>"
    "{% elif item['type'] == 'text' %} {{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
# Gemma 3 turns; the processor expands <start_of_image> into the image token sequence.
_GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
_CHAT_TEMPLATES = {
    "qwen2_vl": _QWEN_CHAT_TEMPLATE,
    "qwen2_5_vl": _QWEN_CHAT_TEMPLATE,
    "llava_next": _LLAVA_CHAT_TEMPLATE,
    "idefics3": _IDEFICS3_CHAT_TEMPLATE,
    "gemma3": _GEMMA3_CHAT_TEMPLATE,
}


_CARD_NAMES = ("A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K")
_ALFWORLD_COMMANDS = (
    "go to countertop 1",
    "go to cabinet 2",
    "open fridge 1",
    "close microwave 1",
    "take mug 1 from countertop 1",
    "put mug 1 in/on coffeemachine 1",
    "clean mug 1 with sinkbasin 1",
    "heat egg 2 with microwave 1",
    "cool apple 1 with fridge 1",
    "use desklamp 1",
    "examine book 3",
    "look",
    "inventory",
)


def _card_value(card: str) -> int:
    return {"A": 1, "J": 10, "Q": 10, "K": 10}.get(card, int(card) if card.isdigit() else 10)


def _random_state(env_id: str, rng: np.random.Generator) -> tuple[dict, list[str], str]:
    """A plausible (info, legal actions, state text) triple for one of the built-in prompts."""
    if env_id.endswith("NumberLine-v0"):
        current, target = (int(x) for x in rng.choice(6, size=2, replace=False))
        return {"current": current, "target": target}, ["-", "+"], f"Current: {current}, Target: {target}"
    if env_id.endswith("Blackjack-v0"):
        cards = [str(rng.choice(_CARD_NAMES)) for _ in range(int(rng.integers(2, 5)))]
        total = sum(_card_value(card) for card in cards)
        dealer = str(rng.choice(_CARD_NAMES))
        info = {"dealer_card": dealer, "player_cards": cards, "player_sum": total, "usable_ace": "A" in cards}
        return info, ["stand", "hit"], f"Dealer shows {dealer}; you hold {', '.join(cards)}."
    if env_id.endswith("ALFWorld-v0"):
        legal = [str(c) for c in rng.choice(_ALFWORLD_COMMANDS, size=int(rng.integers(3, 8)), replace=False)]
        state = "You are in the middle of a room. Your task is to: put a clean mug in coffeemachine."
        return {}, legal, state
    count, target = (2, 12) if env_id.endswith("EZPoints-v0") else (4, 24)
    cards = [str(rng.choice(_CARD_NAMES)) for _ in range(count)]
    numbers = [_card_value(card) for card in cards]
    operators = ["+", "*", "="] if count == 2 else ["+", "-", "*", "/", "(", ")", "="]
    formula = [str(rng.choice(numbers)), str(rng.choice(operators[:-1]))][: int(rng.integers(0, 3))]
    info = {"cards": cards, "numbers": numbers, "formula": formula, "target": target}
    return info, [str(n) for n in range(1, 11)] + operators, f"Cards: {', '.join(cards)}"


def tokenizer_corpus(seed: int = 0, examples_per_prompt: int = 60) -> list[str]:
    """Texts the tiny tokenizer is trained on: every built-in task prompt (CoT and action-only) and answers.

    Built from :mod:`vlm_agent.prompting` (``prompt_for(...).render`` and ``answer_from_info``) on
    random plausible states, so that the BPE merges fit what the policy reads and writes.
    """
    from vlm_agent.prompting.env_prompts import (
        answer_from_info,
        known_env_ids,
        prompt_for,
    )

    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for env_id in known_env_ids():
        for cot in (True, False):
            template = prompt_for(env_id, cot=cot)
            for _ in range(examples_per_prompt):
                info, legal, state = _random_state(env_id, rng)
                action = str(rng.choice(legal))
                texts.append(template.render(state, legal))
                texts.append(answer_from_info(template, info, action))
    return texts


def env_vocabulary_corpus(env_id: str, repeats: int = 4) -> list[str]:
    """Texts that teach the tiny tokenizer an environment's own words, [] where the default corpus
    covers them (the card games).

    ALFWorld names every object and receptacle by its type (``sidetable 1``, ``peppershaker 2``):
    the default corpus knows a few, so most names split into single letters (``sidetable``: 5
    tokens), which a tiny model fails to copy whole out of the admissible commands (it answered
    ``go to 1``). This corpus is every object and receptacle type of alfworld's public constants
    (``alfworld.gen.constants``: the task's vocabulary, no game's content) in the command forms of
    the game.
    """
    if not env_id.endswith("ALFWorld-v0"):
        return []
    from gym_cards.alfworld.engine import import_alfworld

    import_alfworld()  # keeps ~/.cache clean
    from alfworld.gen import constants

    objects = sorted({name.lower() for name in constants.OBJECTS})
    receptacles = sorted({name.lower() for name in constants.RECEPTACLES})
    texts = []
    for number, receptacle in enumerate(receptacles):
        texts += [f"go to {receptacle} {number % 9 + 1}", f"open {receptacle} 1", f"close {receptacle} 2",
                  f"examine {receptacle} 1", f"You arrive at {receptacle} 1. On the {receptacle} 1, you see nothing."]
    for number, name in enumerate(objects):
        receptacle = receptacles[number % len(receptacles)]
        texts += [f"take {name} {number % 9 + 1} from {receptacle} 1", f"move {name} 1 to {receptacle} 2",
                  f"put {name} 1 in/on {receptacle} 1", f"a {name} 2, and a {name} 3",
                  f"Your task is to: put some {name} on {receptacle}."]
    return texts * repeats


def train_tokenizer(
    arch: str, *, seed: int = 0, vocab_size: int = 1024, corpus: Sequence[str] | None = None
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (digits split) with the special tokens of ``arch``."""
    if arch not in _TOKENS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(TINY_ARCHITECTURES)}")
    spec = _TOKENS[arch]
    texts = list(corpus) if corpus is not None else tokenizer_corpus(seed)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=spec.all_special(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    check_signals()  # Ctrl-C during the Rust training loop is dropped there; raise it now
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=spec.eos,
        pad_token=spec.pad,
        bos_token=spec.bos,
        unk_token=spec.unk,
        padding_side="left",
        chat_template=_CHAT_TEMPLATES[arch],
        extra_special_tokens=dict(spec.named),
    )
    fast.add_special_tokens({"additional_special_tokens": [*spec.named.values(), *spec.other]})
    return fast
