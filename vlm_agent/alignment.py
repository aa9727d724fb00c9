"""Vision-language alignment: teach a (tiny) VLM to read the game state from the image.

A randomly initialised model does not read its image: PPO and SFT on CPU could only learn with
the state written into the prompt as text (``show_state``). This stage gives it working eyes
before any task training, with the state's read-out as the caption:

    image of a NumberLine state  ->  {"current number": "1", "target number": "3"}
    image of a Blackjack hand    ->  {"dealer card": "4 of clubs", "player cards": [...], "player total": "14"}

The read-out keys and values are exactly those the task's CoT answer starts with (the built-in
template's ``readout`` fields, values from the env's ``info``), so what the model learns here is
what the warm start and PPO need. The images are states of many random episodes (the reset seed
and a few random moves); held-out states use :func:`vlm_agent.evaluation.held_out_seed`.

Three stages, like LLaVA's (projector first, then the language model):

1. **Projector** (``projector_steps``): for each read-out field, the image token that best tells
   its value apart is found from the random model's own features (nearest class mean on half of
   the training images, scored on the other half: no layout is hand-coded). The projector alone
   is trained to write, into that token, the field's name plus its value in the language model's
   word space: ``emb(' "current number') + emb('1')`` (each normalised). The vision tower and the
   language model stay frozen. ``projector_fit`` first sets the projector's output layer by least
   squares to those targets (:func:`fit_projector`), which the gradient steps find slowly where a
   value shows in a few pixels (a card's rank).
2. **Language model** (``language_steps``): the language model's layers learn the read-out with
   the word embeddings and the vision side frozen, so the tokens written in stage 1 keep their
   meaning while the language model learns to look them up (``output_norm_lr_factor``: the
   final norm, which alone sets how sharp the logits can get then, may learn faster).
3. **Whole model** (``full_steps``, default 0): everything trained together.

Why: ``benchmarks/readout_bottleneck.py`` measured that the random image tokens already carry
the state (a linear probe reads it perfectly) and that the tiny language model learns the same
read-out from the state as text in ~150 steps, but from the raw image tokens it stays at chance
after 500 (and after 1,700 in earlier runs). Replacing the value tokens by word embeddings was
not enough (0% after 500 steps; 78% when the other half of the target digit held it); tokens
that also carry the field's name were read within 300 steps. Stage 1 makes
the projector produce such tokens; stage 2 must not train the embeddings, or the word space
stage 1 aimed at moves away within a few steps at these learning rates (measured: chance).
Stage 2 stalls at loss ~3.3 (the capped logits) and its reading depends on the seed
(``benchmarks/results/tiny_vlm_readout.md`` aligns seeds 0, 1 and 2); the SFT warm start after it
trains the same layers further.

:func:`readout_accuracy` measures the read-out from the image alone (greedy decoding, each field
compared exactly); ``blank=True`` replaces every image by a frame of its background colour, the
control that must fall to chance if the model really reads the image.

    vlm-agent align --output_dir aligned_tiny      # builds a legible tiny qwen2_vl first

Same ``seed`` -> same examples, same batches, same weights.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlm_agent.agents import blank_like

#: The instruction of every alignment example (one fixed caption prompt, as in LLaVA's stage 1).
READOUT_PROMPT = "Read out the game state shown in the image as JSON."

#: Environments whose images the default alignment covers. NumberLine alone: Blackjack needs its own
#: settings (4096 images, projector_fit, 1500 language steps, output_norm_lr_factor 10: player cards
#: 90.3% per card, benchmarks/results/tiny_vlm_readout_blackjack.md), and aligning both together left
#: NumberLine at chance (23% / 19%, an earlier recipe).
DEFAULT_ALIGN_ENVS = ("gym_cards/NumberLine-v0",)

#: Parameter-name parts of the vision tower and the projector of the five tiny architectures
#: (Qwen's ``visual`` holds its merger; LLaVA-NeXT's projector; Idefics3's connector; Gemma 3's
#: projector): frozen while the language model learns (stage 2).
VISION_PARAMETER_PARTS = ("visual.", "vision_tower.", "vision_model.", "multi_modal_projector.", "connector.",
                          "image_newline")

#: Parameter-name parts of the projector alone (Qwen's merger, LLaVA-NeXT's and Gemma 3's
#: projector, Idefics3's connector): what stage 1 trains.
PROJECTOR_PARAMETER_PARTS = ("visual.merger.", "multi_modal_projector.", "connector.")

#: Architectures whose image tokens stage 1 can address one by one (their processors give ``image_grid_thw``).
PROJECTOR_ARCHITECTURES = ("qwen2_vl", "qwen2_5_vl")

#: Stage 1's loss per read-out slot: cross-entropy over the field's possible values (cosine
#: similarity x ``SLOT_SIMILARITY_SCALE``) plus ``SLOT_DISTANCE_WEIGHT`` x the squared distance
#: to the target vector.
SLOT_SIMILARITY_SCALE = 50.0
SLOT_DISTANCE_WEIGHT = 30.0

#: A field is given a slot only if one image token tells its value apart on at least this share
#: of the held-back half of the training images (Blackjack's player total, a sum, has no token).
MIN_SLOT_ACCURACY = 0.6

#: ... and only if it is present in at least this share of the images (Blackjack: hands of two
#: and three cards get slots, the 4% of four cards none).
MIN_SLOT_SHARE = 0.1


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


def _named_parameters(model: Any, parts: Sequence[str], what: str) -> list[Any]:
    chosen = [p for name, p in model.named_parameters() if any(part in name for part in parts)]
    if not chosen:
        raise ValueError(f"found no {what} parameters in {type(model).__name__} (looked for {tuple(parts)})")
    return chosen


def vision_parameters(model: Any) -> list[Any]:
    """The vision tower's and projector's parameters (see :data:`VISION_PARAMETER_PARTS`)."""
    return _named_parameters(model, VISION_PARAMETER_PARTS, "vision")


def projector_parameters(model: Any) -> list[Any]:
    """The projector's parameters (see :data:`PROJECTOR_PARAMETER_PARTS`): stage 1."""
    return _named_parameters(model, PROJECTOR_PARAMETER_PARTS, "projector")


def language_parameters(model: Any) -> list[Any]:
    """The language model's layers: every parameter but the vision side and the word embeddings (stage 2)."""
    frozen = {id(p) for p in vision_parameters(model)}
    frozen |= {id(m.weight) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    return [p for p in model.parameters() if id(p) not in frozen]


def train_only(model: Any, parameters: Sequence[Any]) -> None:
    """Let gradients reach ``parameters`` alone (``requires_grad``); the rest of ``model`` is frozen."""
    chosen = {id(p) for p in parameters}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)


def warmup_cosine(optimizer: Any, steps: int) -> Any:
    """The alignment's schedule: linear warm-up over the first 10% of ``steps``, then a cosine decay."""
    import torch

    warmup = max(1, steps // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps))),
    )


def _prompt_inputs(processor: Any, images: Sequence[np.ndarray], prompts: Sequence[str] | None = None) -> dict[str, Any]:
    from vlm_agent.prompts import chat_messages

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

    from vlm_agent.policy import uses_multimodal_rope

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


#: (read-out field, item position in a list field or None, the list's length or None)
SlotKey = tuple[str, int | None, int | None]


def slot_values(values: dict[str, Any]) -> dict[SlotKey, Any]:
    """The read-out split into slots: one per scalar field, one per item of a list field.

    A list item's slot is its position *in a list of that length*: a centred layout (Blackjack's
    hand) moves every card when one is added, so card 0 of two and card 0 of three lie apart
    (measured: one token per position told 28-31% of player cards apart, one per position and
    length 98-99%).
    """
    out: dict[SlotKey, Any] = {}
    for key, value in values.items():
        if isinstance(value, list):
            out.update({(key, index, len(value)): item for index, item in enumerate(value)})
        else:
            out[(key, None, None)] = value
    return out


def image_tokens(model: Any, processor: Any, images: Sequence[np.ndarray]) -> list[Any]:
    """The projected image tokens the language model receives, one ``(tokens, width)`` tensor per image.

    Stage 1 needs them per image; the architectures whose processor gives ``image_grid_thw``
    (``qwen2_vl``, ``qwen2_5_vl``) return them so.
    """
    inputs = processor.image_processor(images=list(images), return_tensors="pt")
    if "image_grid_thw" not in inputs:
        raise ValueError(f"the projector stage (projector_steps > 0) supports the Qwen2-VL family; "
                         f"{type(model).__name__} needs projector_steps=0")
    return list(model.get_image_features(pixel_values=inputs["pixel_values"],
                                         image_grid_thw=inputs["image_grid_thw"]).pooler_output)


@dataclass(frozen=True)
class ReadoutSlot:
    """The image token that holds one read-out slot of an env, and how well it told values apart."""

    env_id: str
    key: str
    index: int | None
    token: int
    accuracy: float
    length: int | None = None  # a list item's slot: for lists of this length (see slot_values)

    @property
    def slot_key(self) -> SlotKey:
        return (self.key, self.index, self.length)


def find_readout_slots(features: Any, examples: Sequence[ReadoutExample]) -> list[ReadoutSlot]:
    """For each slot of ``examples``' read-outs, the image token whose features best tell its value apart.

    ``features``: ``(images, tokens, width)`` of the (random) model. Score of a token: accuracy of
    the nearest class mean fitted on the first half of the images, on the second half; ties go to
    the token whose class means lie furthest apart. Slots take their best token in turn (best
    first); a token holds at most one slot per image, so slots never read out together (card 0 of
    a hand of two, card 1 of a hand of three) may share one. Slots under :data:`MIN_SLOT_ACCURACY`,
    or present in under :data:`MIN_SLOT_SHARE` of the images, get none.
    """
    import torch

    half = len(examples) // 2
    per_image = [slot_values(e.values) for e in examples]
    counts = Counter(key for values in per_image for key in values)
    candidates: list[tuple[tuple[float, float], SlotKey, int]] = []
    for key in (k for k, n in counts.items() if n >= len(examples) * MIN_SLOT_SHARE):
        rows = [i for i, v in enumerate(per_image) if key in v]
        labels = [json.dumps(per_image[i][key]) for i in rows]
        train = [j for j, i in enumerate(rows) if i < half]
        test = [j for j, i in enumerate(rows) if i >= half]
        if not train or not test:
            continue
        classes = sorted(set(labels[j] for j in train))
        y = torch.tensor([classes.index(labels[j]) if labels[j] in classes else -1 for j in range(len(rows))])
        x_all = features[rows]
        for token in range(features.shape[1]):
            x = x_all[:, token]
            centroids = torch.stack([x[train][y[train] == c].mean(0) for c in range(len(classes))])
            accuracy = float((torch.cdist(x[test], centroids).argmin(1) == y[test]).float().mean())
            spread = float(centroids.var(0).sum() / (x.pow(2).sum(-1).mean() + 1e-12)) if len(classes) > 1 else 0.0
            candidates.append(((accuracy, spread), key, token))
    env_id = examples[0].env_id
    together = {(a, b) for values in per_image for a in values for b in values}
    slots: list[ReadoutSlot] = []
    for (accuracy, _), key, token in sorted(candidates, key=lambda c: (c[0], -c[2]), reverse=True):
        if accuracy < MIN_SLOT_ACCURACY:
            break
        if any(slot.slot_key == key or (slot.token == token and (slot.slot_key, key) in together) for slot in slots):
            continue
        slots.append(ReadoutSlot(env_id, key[0], key[1], token, accuracy, key[2]))
    return sorted(slots, key=lambda slot: (list(examples[0].values).index(slot.key), slot.length or 0, slot.index or 0))


def slot_target(model: Any, processor: Any, key: str, index: int | None, value: Any, *, with_key: bool = True) -> Any:
    """What stage 1 writes into a slot's token: the field's name plus its value, in word-embedding space.

    ``emb(' "<key>')`` + ``emb(str(value))`` (+ ``emb(str(index))`` for a list item), each the
    normalised mean of its tokens' input embeddings, scaled to the embeddings' mean norm. A value
    of several words is the sum of its words' vectors (``emb('9') + emb(' of') + emb(' spades')``):
    one mean over all its tokens let the suit's five letter tokens drown the rank's one (measured
    on Blackjack: suits read 95-100%, ranks 4-35%). ``with_key=False`` leaves the name out (the
    value's words alone).
    """
    tokenizer = processor.tokenizer
    embeddings = model.get_input_embeddings().weight.detach()

    def words(text: str) -> Any:
        vector = embeddings[tokenizer(text, add_special_tokens=False)["input_ids"]].mean(0)
        return vector / vector.norm()

    first, *rest = str(value).split(" ")
    target = words(first) + sum((words(f" {word}") for word in rest), start=0 * embeddings[0])
    target = target + (words(f' "{key}') if with_key else 0)
    if index is not None and with_key:
        target = target + words(str(index))
    return target * embeddings.norm(dim=-1).mean()


def slot_readings(examples: Sequence[ReadoutExample],
                  slots: Sequence[ReadoutSlot]) -> list[tuple[ReadoutExample, list[tuple[ReadoutSlot, Any]]]]:
    """Each example of an env that has slots, with ``(slot, value)`` for every slot its read-out holds."""
    by_env: dict[str, list[ReadoutSlot]] = {}
    for slot in slots:
        by_env.setdefault(slot.env_id, []).append(slot)
    readings = []
    for example in examples:
        if example.env_id in by_env:
            present = slot_values(example.values)
            readings.append((example, [(slot, present[slot.slot_key]) for slot in by_env[example.env_id]
                                       if slot.slot_key in present]))
    return readings


#: Ridge of :func:`fit_projector`'s least squares, relative to the mean squared input feature.
PROJECTOR_FIT_RIDGE = 1e-4


def projector_output_layer(model: Any) -> Any:
    """The projector's last linear layer, whose outputs are the image tokens (Qwen's ``merger.mlp.2``)."""
    import torch

    layers = [module for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and any(part in f"{name}." for part in PROJECTOR_PARAMETER_PARTS)]
    if not layers:
        raise ValueError(f"found no linear projector layer in {type(model).__name__} (looked for {PROJECTOR_PARAMETER_PARTS})")
    return layers[-1]


def fit_projector(model: Any, processor: Any, examples: Sequence[ReadoutExample], slots: Sequence[ReadoutSlot],
                  *, batch_size: int = 64) -> float:
    """Stage 1 in closed form: refit the projector's output layer by (ridge) least squares so that
    each slot's token is its :func:`slot_target`, over every slot of every example; returns the
    fit's root-mean-square distance relative to the targets' mean norm.

    The random model's slot tokens tell the values apart (nearest class mean: 82-100% per
    Blackjack card slot), but by small differences (a card's rank is a few pixels in its corner)
    that gradient steps on the shared projector amplify slowly. Measured on Blackjack, the card
    nearest to each held-out slot token: 45-91% per slot after 1,000 steps, 66-100% after the fit
    (the 66%: the middle card of three, whose suit falls across two tokens).
    """
    import torch

    readings = slot_readings(examples, slots)
    if not readings:
        raise ValueError("the projector fit found no image token that tells any read-out field apart; "
                         "use projector_fit=False")
    layer = projector_output_layer(model)
    captured: list[Any] = []
    hook = layer.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
    wanted: dict[tuple[str, int | None, str], Any] = {}  # one target per field, position and value
    rows, targets = [], []
    try:
        for start in range(0, len(readings), batch_size):
            batch = readings[start : start + batch_size]
            captured.clear()
            with torch.no_grad():
                tokens = image_tokens(model, processor, [example.image for example, _ in batch])
            hidden = captured[-1].split([len(t) for t in tokens])
            for (_, pairs), features in zip(batch, hidden):
                for slot, value in pairs:
                    key = (slot.key, slot.index, json.dumps(value))
                    if key not in wanted:
                        wanted[key] = slot_target(model, processor, slot.key, slot.index, value)
                    rows.append(features[slot.token])
                    targets.append(wanted[key])
    finally:
        hook.remove()
    x = torch.stack(rows).double()
    if layer.bias is not None:
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    y = torch.stack(targets).double()
    gram = x.T @ x
    ridge = PROJECTOR_FIT_RIDGE * gram.diagonal().mean()
    solution = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype), x.T @ y)
    with torch.no_grad():
        layer.weight.copy_(solution[: layer.in_features].T.to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(solution[-1].to(layer.bias.dtype))
    error = (x @ solution - y).pow(2).sum(1).mean().sqrt() / y.norm(dim=1).mean()
    return float(error)


def train_projector(
    model: Any,
    processor: Any,
    examples: Sequence[ReadoutExample],
    slots: Sequence[ReadoutSlot],
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    log: Any = None,
) -> list[float]:
    """Stage 1: train the projector alone to write each slot's target into its token; returns the losses."""
    import torch

    if steps <= 0:
        return []
    if not slots:
        raise ValueError("the projector stage found no image token that tells any read-out field apart; "
                         "use projector_steps=0")
    readings = slot_readings(examples, slots)
    usable = [example for example, _ in readings]
    # Each slot's values in order of first appearance (their index is the class label), and each
    # example's (slot, label) pairs, found once before training.
    labels: dict[ReadoutSlot, dict[str, int]] = {}
    wanted: list[list[tuple[ReadoutSlot, int]]] = []
    for _, pairs in readings:
        row = []
        for slot, value in pairs:
            known = labels.setdefault(slot, {})
            row.append((slot, known.setdefault(json.dumps(value), len(known))))
        wanted.append(row)
    targets = {slot: torch.stack([slot_target(model, processor, slot.key, slot.index, json.loads(v)) for v in known])
               for slot, known in labels.items()}
    parameters = projector_parameters(model)
    train_only(model, parameters)
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    model.train()
    losses: list[float] = []
    for step in range(steps):
        chosen = rng.choice(len(usable), min(batch_size, len(usable)), replace=False)
        features = image_tokens(model, processor, [usable[i].image for i in chosen])
        terms = []
        for feature, i in zip(features, chosen):
            for slot, label in wanted[i]:
                table = targets[slot]
                token = feature[slot.token]
                similarity = torch.nn.functional.normalize(token, dim=-1) @ torch.nn.functional.normalize(table, dim=-1).T
                terms.append(torch.nn.functional.cross_entropy(SLOT_SIMILARITY_SCALE * similarity[None],
                                                               torch.tensor([label]))
                             + SLOT_DISTANCE_WEIGHT * (token - table[label]).pow(2).sum())
        loss = torch.stack(terms).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if log is not None:
            log(step, losses[-1])
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return losses


def train_readout(
    model: Any,
    processor: Any,
    examples: Sequence[ReadoutExample],
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    parameters: str = "all",
    output_norm_lr_factor: float = 1.0,
    log: Any = None,
) -> list[float]:
    """AdamW on :func:`readout_loss` over random batches of ``examples``; returns the step losses.

    ``parameters``: ``"language"`` trains the language model's layers alone (stage 2: word
    embeddings and vision side frozen), ``"all"`` every parameter (stage 3). The learning rate
    warms up over the first 10% of the steps and decays by a cosine; with ``"language"`` the
    language model's final norm learns at ``output_norm_lr_factor`` times it (see
    :class:`VLMAlignConfig`).
    """
    import torch

    if steps <= 0:
        return []
    if parameters not in ("language", "all"):
        raise ValueError(f"train_readout parameters must be 'language' or 'all', got {parameters!r}")
    trained = language_parameters(model) if parameters == "language" else list(model.parameters())
    train_only(model, trained)
    groups: list[dict[str, Any]] = [{"params": trained}]
    norm = getattr(model.get_decoder(), "norm", None) if parameters == "language" else None
    if output_norm_lr_factor != 1.0 and norm is not None and getattr(norm, "weight", None) is not None:
        groups = [{"params": [p for p in trained if p is not norm.weight]},
                  {"params": [norm.weight], "lr": learning_rate * output_norm_lr_factor}]
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, weight_decay=0.0)
    scheduler = warmup_cosine(optimizer, steps)
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
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if log is not None:
            log(step, float(loss.detach()))
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return losses


def generate_readouts(model: Any, processor: Any, images: Sequence[np.ndarray], *, max_new_tokens: int,
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
    projector_steps: int = field(default=200, metadata={
        "help": "Stage 1: steps training the projector alone to write each read-out field into one image token."})
    projector_fit: bool = field(default=False, metadata={
        "help": "Stage 1 starts by refitting the projector's output layer by least squares to those targets "
                "(projector_steps then go on from it). Blackjack: the share of held-out cards decoded from their "
                "tokens was 0.45-0.91 per slot after 1,000 steps, 0.66-1 after the fit (player cards read: 88.5 -> 90.3 "
                "in 100)."})
    language_steps: int = field(default=300, metadata={
        "help": "Stage 2: steps training the language model's layers (word embeddings and vision side frozen)."})
    full_steps: int = field(default=0, metadata={"help": "Stage 3: steps training the whole model."})
    output_norm_lr_factor: float = field(default=1.0, metadata={
        "help": "Stage 2: the language model's final norm learns at this many times the learning rate. With the "
                "tied word embeddings frozen, that norm's weight alone caps the logits (a tiny model's at ~2.5: "
                "stage 2 stalls at loss ~3.3 and reads by the seed's luck). 10 made the NumberLine read-out hold on "
                "more seeds but its SFT warm start then already won every held-out episode, leaving PPO nothing "
                "to learn (benchmarks/results/tiny_vlm_readout_norm10.md)."})
    learning_rate: float = field(default=3e-3, metadata={"help": "AdamW peak learning rate of every stage."})
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
        steps = (self.projector_steps, self.language_steps, self.full_steps)
        if self.num_examples < 1 or self.batch_size < 1 or min(steps) < 0:
            raise ValueError(
                "VLMAlignConfig needs num_examples >= 1, batch_size >= 1 and projector_steps, language_steps, "
                f"full_steps >= 0; got {self.num_examples}, {self.batch_size}, {steps}"
            )
        if self.projector_stage and self.model_name_or_path is None and self.tiny_arch not in PROJECTOR_ARCHITECTURES:
            raise ValueError(f"VLMAlignConfig: the projector stage supports tiny_arch {' or '.join(PROJECTOR_ARCHITECTURES)}, "
                             f"not {self.tiny_arch!r}; use --projector_steps 0 (and no --projector_fit) for it")
        if not isinstance(self.projector_fit, bool):
            raise ValueError(f"VLMAlignConfig.projector_fit must be true or false, got {self.projector_fit!r}")
        if not self.output_norm_lr_factor > 0:
            raise ValueError(f"VLMAlignConfig needs output_norm_lr_factor > 0, got {self.output_norm_lr_factor}")
        if self.learning_rate <= 0 or self.eval_examples < 0:
            raise ValueError(f"VLMAlignConfig needs learning_rate > 0 and eval_examples >= 0, got "
                             f"{self.learning_rate}, {self.eval_examples}")

    @property
    def projector_stage(self) -> bool:
        """Whether stage 1 runs (gradient steps or the least-squares fit)."""
        return self.projector_steps > 0 or self.projector_fit


@dataclass
class AlignResult:
    """What :func:`run_alignment` returns: the saved model, each stage's losses, the slots, held-out read-outs."""

    model_dir: Path
    projector_losses: list[float]
    language_losses: list[float]
    full_losses: list[float]
    slots: list[ReadoutSlot]
    accuracy: list[ReadoutAccuracy]

    @property
    def losses(self) -> list[float]:
        return self.projector_losses + self.language_losses + self.full_losses


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
    per_env = {env_id: readout_examples(env_id, config.num_examples, seed=config.seed) for env_id in config.env_ids}
    examples = [e for env_examples in per_env.values() for e in env_examples]
    slots: list[ReadoutSlot] = []
    fit_error = None
    if config.projector_stage:
        model.eval()
        with torch.no_grad():
            for env_examples in per_env.values():
                slots += find_readout_slots(torch.stack(image_tokens(model, processor, [e.image for e in env_examples])),
                                            env_examples)
    if config.projector_fit:
        fit_error = fit_projector(model, processor, examples, slots)
    bar = tqdm(total=config.projector_steps + config.language_steps + config.full_steps, desc="alignment",
               unit="step", disable=not config.progress_bar)

    def log(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        common = {"learning_rate": config.learning_rate, "batch_size": config.batch_size, "log": log}
        projector_losses = train_projector(model, processor, examples, slots, steps=config.projector_steps,
                                           seed=config.seed, **{**common, "batch_size": max(32, config.batch_size)})
        language_losses = train_readout(model, processor, examples, steps=config.language_steps, seed=config.seed + 1,
                                        parameters="language", output_norm_lr_factor=config.output_norm_lr_factor,
                                        **common)
        full_losses = train_readout(model, processor, examples, steps=config.full_steps, seed=config.seed + 2,
                                    parameters="all", **common)
    bar.close()
    accuracy = []
    for env_id in config.env_ids if config.eval_examples else ():
        held_out = held_out_examples(env_id, config.eval_examples, seed=config.seed)
        accuracy += [readout_accuracy(model, processor, held_out, blank=blank) for blank in (False, True)]
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    summary = {"config": asdict(config), "slots": [asdict(slot) for slot in slots], "projector_fit_error": fit_error,
               "projector_losses": projector_losses, "language_losses": language_losses, "full_losses": full_losses,
               "accuracy": [asdict(a) for a in accuracy]}
    (output_dir / "align_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return AlignResult(output_dir, projector_losses, language_losses, full_losses, slots, accuracy)
