"""Vision-language alignment: teach a (tiny) VLM to read the game state from the image.

A randomly initialised model does not read its image: PPO and SFT on CPU could only learn with
the state written into the prompt as text (``show_state``). This stage gives it working eyes
before any task training, with the state's read-out as the caption:

    image of a NumberLine state  ->  {"current number": "1", "target number": "3"}
    image of a Blackjack hand    ->  {"dealer card": "4 of clubs", "player cards": [...], "player total": "14"}

The read-out keys and values are exactly those the task's CoT answer starts with (the built-in
template's ``readout`` fields, values from the env's ``info``), so what the model learns here is
what the warm start and PPO need. The images are states of many random episodes (the reset seed
and a few random moves); held-out states use :func:`vlm_agent.rollout.loop.held_out_seed`.

Three stages, like LLaVA's (projector first, then the language model):

1. **Projector** (``projector_steps``): for each read-out field, the image token that best tells
   its value apart is found from the random model's own features (nearest class mean on half of
   the training images, scored on the other half: no layout is hand-coded). The projector alone
   is trained to write, into that token, the field's name plus its value in the language model's
   word space: ``emb(' "current number') + emb('1')`` (each normalised). The vision tower and the
   language model stay frozen. ``projector_fit`` first sets the projector's output layer by least
   squares to those targets (:func:`fit_projector`), which the gradient steps find slowly where a
   value shows in a few pixels (a card's rank). ``quiet_image_tokens`` also sends every other
   image token to zero, so the language model can only read each field from its slot (not learn
   the training images' states by heart from the rest, which failed on unseen states);
   ``ordered_slot_targets`` keeps the order and count of a value's tokens (digits one by one:
   '14', '11') in its target; ``answer_slot_targets`` builds a target from the tokens the read-out
   answer writes for the value (the tokenizer merges EZPoints' formula ``*`` with its quotes into
   one token, ``' "*"}'``, and writes the empty formula as ``'"}'``); ``visible_slots`` puts no
   slot on a token where one of the field's values draws nothing (the empty formula leaves its
   token the background, which quiet tokens send to zero).
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
compared exactly) on evaluation states that no training image shows (:func:`held_out_examples`:
NumberLine's ``split="eval"`` states, other envs' states by the read-out's hash: a formula game's deal); its controls
replace every image by a frame of its background colour, or by another state's image, and must
fall to chance if the model really reads the image. ``align_summary.json`` records the distinct
states of each side and the model's identity (:func:`model_identity`).

    vlm-agent align --output_dir aligned_tiny      # builds a legible tiny qwen2_vl first

Same ``seed`` -> same examples, same batches, same weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlm_agent.agents.blank import blank_like
from vlm_agent.demo.readout import (
    CONTROLS,
    DEFAULT_ALIGN_ENVS,
    ReadoutAccuracy,
    ReadoutExample,
    distinct_states,
    held_out_examples,
    readout_accuracy,
    readout_examples,
    readout_loss,
    warmup_cosine,
)
from vlm_agent.demo.readout_slots import (
    PROJECTOR_ARCHITECTURES,
    SLOT_DISTANCE_WEIGHT,
    SLOT_SIMILARITY_SCALE,
    ReadoutSlot,
    find_readout_slots,
    fit_projector,
    image_tokens,
    quiet_tokens,
    slot_readings,
    slot_target,
)
from vlm_agent.models.freezing import (
    language_parameters,
    projector_parameters,
    train_only,
)
from vlm_agent.rollout.environments import EnvKwargs
from vlm_agent.training.interrupts import check_signals


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
    quiet: bool = False,
    ordered: bool = False,
    answer: bool = False,
    log: Any = None,
) -> list[float]:
    """Stage 1: train the projector alone to write each slot's target into its token; returns the losses.

    ``quiet``: each image's other tokens are pulled to zero too (``SLOT_DISTANCE_WEIGHT`` x their
    mean squared norm); ``ordered``: the targets keep a value's token order; ``answer``: a value's
    words are the tokens its read-out answer writes (see :class:`VLMAlignConfig`)."""
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
    holders: dict[tuple[ReadoutSlot, str], dict[str, Any]] = {}  # the first read-out that holds each value
    wanted: list[list[tuple[ReadoutSlot, int]]] = []
    for example, pairs in readings:
        row = []
        for slot, value in pairs:
            known = labels.setdefault(slot, {})
            row.append((slot, known.setdefault(json.dumps(value), len(known))))
            holders.setdefault((slot, json.dumps(value)), example.values)
        wanted.append(row)
    targets = {slot: torch.stack([slot_target(model, processor, slot.key, slot.index, json.loads(v), ordered=ordered,
                                              answer=holders[(slot, v)] if answer else None)
                                  for v in known])
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
            rest = quiet_tokens(len(feature), [slot.token for slot, _ in wanted[i]]) if quiet else []
            if rest:
                terms.append(SLOT_DISTANCE_WEIGHT * feature[rest].pow(2).sum(-1).mean())
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
    env_kwargs: EnvKwargs = field(default_factory=EnvKwargs, metadata={
        "help": "Options of every env's gymnasium.make (JSON or YAML mapping), e.g. '{\"max_position\": 20}'; "
                "a `split` option is set by the alignment itself (train images from 'train', held-out from 'eval')."})
    num_examples: int = field(default=1024, metadata={"help": "Training images per environment."})
    projector_steps: int = field(default=200, metadata={
        "help": "Stage 1: steps training the projector alone to write each read-out field into one image token."})
    projector_fit: bool = field(default=False, metadata={
        "help": "Stage 1 starts by refitting the projector's output layer by least squares to those targets "
                "(projector_steps then go on from it). Blackjack: the share of held-out cards decoded from their "
                "tokens was 0.45-0.91 per slot after 1,000 steps, 0.66-1 after the fit (player cards read: 88.5 -> 90.3 "
                "in 100)."})
    quiet_image_tokens: bool = field(default=False, metadata={
        "help": "Stage 1 (the fit and the projector steps) also sends every image token that holds no read-out slot "
                "to zero, so the slots are all the language model can read in the image: it cannot learn the "
                "training states by heart from the other tokens and must read each field from its own slot, which "
                "carries over to unseen states. NumberLine 0..20, held-out (current, target) pairs, fit only, 600 "
                "language steps, norm factor 10, seed 0: current/target read 40/7 percent without either option, 58/42 percent "
                "with ordered_slot_targets alone, 100/100 percent with both; seeds 0, 1, 2 with both: 100/100, 100/98, "
                "100/94 percent (benchmarks/results/tiny_vlm_readout_line20.md)."})
    ordered_slot_targets: bool = field(default=False, metadata={
        "help": "Stage 1 writes a value of several tokens as their unit vectors weighted 1, 1/2, ... (order and count "
                "kept) instead of their normalised mean: with numbers tokenized digit by digit the mean makes '1' and "
                "'11' one target and '14' the digits 1 and 4 in no order (NumberLine 0..20, seed 0, fit only, 600 "
                "language steps: states of the training side read 40/42 percent without it, 59/79 percent with it)."})
    answer_slot_targets: bool = field(default=False, metadata={
        "help": "Stage 1 builds each word of a value's target from the tokens the read-out answer writes for it, "
                "not from the word tokenized alone. They differ where the tokenizer merges a value with its JSON "
                "quotes: EZPoints' formula '*' is written as the one token ' \"*\"}', never '*', and the empty "
                "formula as '\"}' (alone it has no token: its target held the field's name only). NumberLine's "
                "digits stand alone, so its targets are unchanged. EZPoints, seed 0, formula read on unseen "
                "states (split by the whole read-out): 18 percent with this option alone (35 percent without), 95 percent with visible_slots with or without it."})
    visible_slots: bool = field(default=False, metadata={
        "help": "Stage 1 puts no read-out slot on a token where one of the field's values draws nothing (the "
                "value's mean features there are a blank frame's): with quiet_image_tokens the fit sends those "
                "same features to zero on every other token and cannot write the value into the slot. EZPoints: "
                "the empty formula leaves the formula's token the background (its slot token then had a quarter "
                "of the norm it had for a written formula); with this option the formula's slot is the "
                "'Formula:' label's token, which tells the formula values apart as well (seed 0: formula read on "
                "unseen states split by the whole read-out 35 percent -> 95 percent; on unseen deals 80-95 percent, chance 62-66: benchmarks/results/tiny_vlm_readout_ezpoints.md)."})
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
        from vlm_agent.prompting.env_prompts import known_env_ids, prompt_for
        from vlm_agent.rollout.environments import check_env

        self.env_kwargs = EnvKwargs(self.env_kwargs)
        for env_id in self.env_ids:
            if env_id not in known_env_ids() or not prompt_for(env_id, cot=True).readout:
                readable = [e for e in known_env_ids() if prompt_for(e, cot=True).readout]
                raise ValueError(f"VLMAlignConfig.env_ids: {env_id!r} has no built-in read-out; choose from {readable}")
            check_env(env_id, self.env_kwargs)
        steps = (self.projector_steps, self.language_steps, self.full_steps)
        if self.num_examples < 1 or self.batch_size < 1 or min(steps) < 0:
            raise ValueError(
                "VLMAlignConfig needs num_examples >= 1, batch_size >= 1 and projector_steps, language_steps, "
                f"full_steps >= 0; got {self.num_examples}, {self.batch_size}, {steps}"
            )
        if self.projector_stage and self.model_name_or_path is None and self.tiny_arch not in PROJECTOR_ARCHITECTURES:
            raise ValueError(f"VLMAlignConfig: the projector stage supports tiny_arch {' or '.join(PROJECTOR_ARCHITECTURES)}, "
                             f"not {self.tiny_arch!r}; use --projector_steps 0 (and no --projector_fit) for it")
        for name in ("projector_fit", "quiet_image_tokens", "ordered_slot_targets", "answer_slot_targets",
                     "visible_slots"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"VLMAlignConfig.{name} must be true or false, got {getattr(self, name)!r}")
        shaping = (self.quiet_image_tokens, self.ordered_slot_targets, self.answer_slot_targets, self.visible_slots)
        if any(shaping) and not self.projector_stage:
            raise ValueError("VLMAlignConfig: quiet_image_tokens, ordered_slot_targets, answer_slot_targets and "
                             "visible_slots shape stage 1; they need projector_steps > 0 or projector_fit")
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
    training_states: dict[str, int] = field(default_factory=dict)  # distinct states per env trained on
    identity: str = ""  # model_identity of the saved model

    @property
    def losses(self) -> list[float]:
        return self.projector_losses + self.language_losses + self.full_losses


def run_alignment(config: VLMAlignConfig) -> AlignResult:
    """Align ``config.model_name_or_path`` (or a new legible tiny model) and save it to ``output_dir``."""
    import torch
    from tqdm.auto import tqdm

    from vlm_agent.models.loading import load_pretrained_model, load_processor

    output_dir = Path(config.output_dir)
    model_path = config.model_name_or_path
    if model_path is None:
        from vlm_agent.demo.tiny_models import LEGIBLE_VISION, make_tiny_model

        model_path = str(make_tiny_model(config.tiny_arch, output_dir / "tiny_random_model", seed=config.seed,
                                         vision=LEGIBLE_VISION))
    processor = load_processor(model_path)
    model = load_pretrained_model(model_path, dtype=torch.float32)
    per_env = {env_id: readout_examples(env_id, config.num_examples, seed=config.seed, env_kwargs=config.env_kwargs)
               for env_id in config.env_ids}
    examples = [e for env_examples in per_env.values() for e in env_examples]
    slots: list[ReadoutSlot] = []
    fit_error = None
    if config.projector_stage:
        model.eval()
        with torch.no_grad():
            for env_examples in per_env.values():
                blank = (image_tokens(model, processor, [blank_like(env_examples[0].image)])[0]
                         if config.visible_slots else None)
                slots += find_readout_slots(torch.stack(image_tokens(model, processor, [e.image for e in env_examples])),
                                            env_examples, blank=blank)
    stage1 = {"quiet": config.quiet_image_tokens, "ordered": config.ordered_slot_targets,
              "answer": config.answer_slot_targets}
    if config.projector_fit:
        fit_error = fit_projector(model, processor, examples, slots, **stage1)
    bar = tqdm(total=config.projector_steps + config.language_steps + config.full_steps, desc="alignment",
               unit="step", disable=not config.progress_bar)

    def log(step: int, loss: float) -> None:
        check_signals()  # a Ctrl-C that native code swallowed stops the alignment here
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        common = {"learning_rate": config.learning_rate, "batch_size": config.batch_size, "log": log}
        projector_losses = train_projector(model, processor, examples, slots, steps=config.projector_steps,
                                           seed=config.seed, **stage1,
                                           **{**common, "batch_size": max(32, config.batch_size)})
        language_losses = train_readout(model, processor, examples, steps=config.language_steps, seed=config.seed + 1,
                                        parameters="language", output_norm_lr_factor=config.output_norm_lr_factor,
                                        **common)
        full_losses = train_readout(model, processor, examples, steps=config.full_steps, seed=config.seed + 2,
                                    parameters="all", **common)
    bar.close()
    accuracy = []
    for env_id in config.env_ids if config.eval_examples else ():
        held_out = held_out_examples(env_id, config.eval_examples, seed=config.seed, env_kwargs=config.env_kwargs)
        accuracy += [readout_accuracy(model, processor, held_out, control=control) for control in CONTROLS]
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    summary = {"config": asdict(config), "training_states": {e: distinct_states(x) for e, x in per_env.items()},
               "slots": [asdict(slot) for slot in slots], "projector_fit_error": fit_error,
               "projector_losses": projector_losses, "language_losses": language_losses, "full_losses": full_losses,
               "accuracy": [asdict(a) for a in accuracy]}
    (output_dir / "align_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return AlignResult(output_dir, projector_losses, language_losses, full_losses, slots, accuracy,
                       summary["training_states"], model_identity(output_dir))


def model_identity(model_dir: str | Path) -> str:
    """A short identity of a saved model: the first 12 hex digits of the SHA-256 of its weight
    files (``*.safetensors``, sorted by name), for results rows to say which model they measured."""
    import hashlib

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ValueError(f"{model_dir} holds no *.safetensors weights to identify")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:12]
