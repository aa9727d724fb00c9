"""Stage 1 of the alignment: which image token holds which read-out field (a *slot*), the
word-space target the projector writes into it, and the least-squares fit of the projector's
output layer.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlm_agent.demo.readout import ReadoutExample
from vlm_agent.models.freezing import PROJECTOR_PARAMETER_PARTS

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


#: :func:`find_readout_slots` given a blank frame's tokens: a token is no candidate for a field when
#: one of the field's values has its class mean there within this share of the token's mean feature
#: norm from the blank frame's token (that value draws nothing there). EZPoints, seed 0: the empty
#: formula's class mean at the formula's token lay 0.038 from the blank frame's, the 'Formula:'
#: label's token 0.75.
BLANK_SLOT_DISTANCE = 0.1


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


def find_readout_slots(features: Any, examples: Sequence[ReadoutExample], blank: Any = None) -> list[ReadoutSlot]:
    """For each slot of ``examples``' read-outs, the image token whose features best tell its value apart.

    ``features``: ``(images, tokens, width)`` of the (random) model. Score of a token: accuracy of
    the nearest class mean fitted on the first half of the images, on the second half; ties go to
    the token whose class means lie furthest apart. Slots take their best token in turn (best
    first); a token holds at most one slot per image, so slots never read out together (card 0 of
    a hand of two, card 1 of a hand of three) may share one. Slots under :data:`MIN_SLOT_ACCURACY`,
    or present in under :data:`MIN_SLOT_SHARE` of the images, get none.

    ``blank``: the ``(tokens, width)`` features of a frame of the background colour. A token where
    one of a slot's values draws nothing (its class mean lies within :data:`BLANK_SLOT_DISTANCE`
    of the blank frame's token) is then no candidate for that slot: its features for that value
    are the background's, which ``quiet_image_tokens`` sends to zero on every other token, so the
    fit cannot write the value there (``VLMAlignConfig.visible_slots``).
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
            if blank is not None and float((centroids - blank[token]).norm(dim=-1).min()) < (
                    BLANK_SLOT_DISTANCE * float(x.norm(dim=-1).mean())):
                continue
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


def slot_target(model: Any, processor: Any, key: str, index: int | None, value: Any, *, with_key: bool = True,
                ordered: bool = False, answer: dict[str, Any] | None = None) -> Any:
    """What stage 1 writes into a slot's token: the field's name plus its value, in word-embedding space.

    ``emb(' "<key>')`` + ``emb(str(value))`` (+ ``emb(str(index))`` for a list item), each the
    normalised mean of its tokens' input embeddings, scaled to the embeddings' mean norm. A value
    of several words is the sum of its words' vectors (``emb('9') + emb(' of') + emb(' spades')``):
    one mean over all its tokens let the suit's five letter tokens drown the rank's one (measured
    on Blackjack: suits read 95-100%, ranks 4-35%). ``with_key=False`` leaves the name out (the
    value's words alone).

    ``ordered``: a word of the value of several tokens is :func:`ordered_tokens_vector` of its
    tokens instead of their normalised mean, which forgets their order and count (a tokenizer that splits digits
    makes '14' and '41', '1' and '11' the same target).

    ``answer``: a read-out (read-out key -> value) that holds ``value`` at ``key`` (and ``index``):
    each word of the value is then the tokens the read-out answer writes for it
    (:func:`answer_word_tokens`), not the word tokenized alone. They differ where the tokenizer
    merges a value with its JSON quotes: the formula ``*`` is written as the one token ``' "*"}'``,
    never ``'*'``, and the empty formula as ``'"}'`` (tokenized alone it has no token, and its
    value part of the target is zero). Digits stand alone in an answer, so NumberLine's targets
    are the same either way.
    """
    tokenizer = processor.tokenizer
    embeddings = model.get_input_embeddings().weight.detach()

    def vector(ids: list[int], in_order: bool) -> Any:
        if not ids:  # an empty value tokenized alone
            return 0 * embeddings[0]
        if in_order:
            return ordered_tokens_vector(embeddings[ids])
        mean = embeddings[ids].mean(0)
        return mean / mean.norm()

    def words(text: str, in_order: bool = False) -> Any:
        return vector(tokenizer(text, add_special_tokens=False)["input_ids"], in_order)

    if answer is not None:
        target = sum((vector(ids, ordered) for ids in answer_word_tokens(tokenizer, answer, key, index)),
                     start=0 * embeddings[0])
    else:
        first, *rest = str(value).split(" ")
        target = words(first, ordered) + sum((words(f" {word}", ordered) for word in rest), start=0 * embeddings[0])
    target = target + (words(f' "{key}') if with_key else 0)
    if index is not None and with_key:
        target = target + words(str(index))
    return target * embeddings.norm(dim=-1).mean()


def answer_spans(values: dict[str, Any]) -> tuple[str, dict[tuple[str, int | None], tuple[int, int]]]:
    """The read-out answer's text (``json.dumps(values, ensure_ascii=False)``, as
    :attr:`~vlm_agent.demo.readout.ReadoutExample.answer` writes it) and, per ``(key, None)`` of a
    scalar field or ``(key, index)`` of a list item, the character span of its value (inside the
    quotes of a string)."""
    text, spans = "{", {}
    for n, (key, value) in enumerate(values.items()):
        text += (", " if n else "") + json.dumps(key, ensure_ascii=False) + ": "
        items = value if isinstance(value, list) else [value]
        text += "[" if isinstance(value, list) else ""
        for i, item in enumerate(items):
            text += ", " if i else ""
            dumped = json.dumps(item, ensure_ascii=False)
            quoted = isinstance(item, str)
            if quoted and dumped[1:-1] != item:
                raise ValueError(f"read-out value {item!r} of {key!r} needs JSON escapes; answer slot targets "
                                 "cannot place its words")
            spans[(key, i if isinstance(value, list) else None)] = (len(text) + quoted, len(text) + len(dumped) - quoted)
            text += dumped
        text += "]" if isinstance(value, list) else ""
    text += "}"
    if text != json.dumps(values, ensure_ascii=False):
        raise ValueError(f"answer slot targets support flat read-outs of scalars and lists, not {values!r}")
    return text, spans


def answer_word_tokens(tokenizer: Any, values: dict[str, Any], key: str, index: int | None) -> list[list[int]]:
    """The token ids the read-out answer of ``values`` writes for each word of the value at ``key``
    (item ``index`` of a list): the answer's tokens that overlap the word's characters, in order.
    A token that merges a word with its quotes or the closing brace (``' "*"}'``) is that word's
    token; an empty value is one word, the token that closes it (``'"}'``).

    Needs a tokenizer that gives character offsets (a fast tokenizer).
    """
    text, spans = answer_spans(values)
    if (key, index) not in spans:
        raise ValueError(f"the read-out {values!r} has no value at {key!r}" + ("" if index is None else f"[{index}]"))
    start, end = spans[(key, index)]
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    pieces = list(zip(encoded["input_ids"], encoded["offset_mapping"]))
    if start == end:  # "": the token that holds its closing quote
        return [[token for token, (a, b) in pieces if a <= end < b]]
    groups, position = [], start
    for word in text[start:end].split(" "):
        if word:
            groups.append([token for token, (a, b) in pieces if a < position + len(word) and b > position])
        position += len(word) + 1
    return groups


#: :func:`ordered_tokens_vector`: the weight of a word's i-th token is ``ORDERED_TOKEN_DECAY ** i``.
ORDERED_TOKEN_DECAY = 0.5


def ordered_tokens_vector(token_embeddings: Any) -> Any:
    """One vector for a word of several tokens that keeps their order and count: the sum of the
    tokens' unit vectors weighted 1, 1/2, 1/4, ... (:data:`ORDERED_TOKEN_DECAY`), so '14' and '41'
    differ (the first token weighs most) and so do '1' and '11' (the norm grows with each token).

    ``token_embeddings``: ``(tokens, width)``. A single token gives its unit vector, as the mean does.
    """
    units = token_embeddings / token_embeddings.norm(dim=-1, keepdim=True)
    weights = ORDERED_TOKEN_DECAY ** np.arange(len(units), dtype=np.float64)
    return (units * units.new_tensor(weights)[:, None]).sum(0)


def quiet_tokens(count: int, slot_tokens: Sequence[int]) -> list[int]:
    """The image tokens of an image of ``count`` tokens that hold none of its ``slot_tokens``: what
    ``quiet=True`` (stage 1) sends to zero."""
    used = set(slot_tokens)
    return [token for token in range(count) if token not in used]


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

#: :func:`fit_projector` with ``quiet``: the weight of each other token's row (zero target) beside a
#: slot's (1). NumberLine 0..20, seeds 0, 1, 2, 1,024 images: the held-out target slot tokens lay
#: nearest their own value's target in 73%, 100%, 72% of 100 images at weight 1 (the 34 other
#: tokens per image outweigh the slots), 100% at each seed at 0.3 (the other tokens' norm then 0.7-0.8%
#: of the slots') and at 0.1 (1.3-1.4%).
QUIET_FIT_WEIGHT = 0.3


def projector_output_layer(model: Any) -> Any:
    """The projector's last linear layer, whose outputs are the image tokens (Qwen's ``merger.mlp.2``)."""
    import torch

    layers = [module for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and any(part in f"{name}." for part in PROJECTOR_PARAMETER_PARTS)]
    if not layers:
        raise ValueError(f"found no linear projector layer in {type(model).__name__} (looked for {PROJECTOR_PARAMETER_PARTS})")
    return layers[-1]


def fit_projector(model: Any, processor: Any, examples: Sequence[ReadoutExample], slots: Sequence[ReadoutSlot],
                  *, batch_size: int = 64, quiet: bool = False, ordered: bool = False, answer: bool = False) -> float:
    """Stage 1 in closed form: refit the projector's output layer by (ridge) least squares so that
    each slot's token is its :func:`slot_target`, over every slot of every example; returns the
    fit's root-mean-square distance relative to the targets' mean norm.

    The random model's slot tokens tell the values apart (nearest class mean: 82-100% per
    Blackjack card slot), but by small differences (a card's rank is a few pixels in its corner)
    that gradient steps on the shared projector amplify slowly. Measured on Blackjack, the card
    nearest to each held-out slot token: 45-91% per slot after 1,000 steps, 66-100% after the fit
    (the 66%: the middle card of three, whose suit falls across two tokens).

    ``quiet``: every other image token of those examples (:func:`quiet_tokens`) gets the target
    zero as well, so that the slots are all the language model can read in the image (see
    ``VLMAlignConfig.quiet_image_tokens``); ``ordered``: the targets keep a value's token order;
    ``answer``: a value's words are the tokens its read-out answer writes (:func:`slot_target`
    given the first example that holds the value). The returned error is over the slot tokens alone.
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
    rows, targets, rest = [], [], []
    try:
        for start in range(0, len(readings), batch_size):
            batch = readings[start : start + batch_size]
            captured.clear()
            with torch.no_grad():
                tokens = image_tokens(model, processor, [example.image for example, _ in batch])
            hidden = captured[-1].split([len(t) for t in tokens])
            for (example, pairs), features in zip(batch, hidden):
                for slot, value in pairs:
                    key = (slot.key, slot.index, json.dumps(value))
                    if key not in wanted:
                        wanted[key] = slot_target(model, processor, slot.key, slot.index, value, ordered=ordered,
                                                  answer=example.values if answer else None)
                    rows.append(features[slot.token])
                    targets.append(wanted[key])
                if quiet:
                    rest += [features[t] for t in quiet_tokens(len(features), [slot.token for slot, _ in pairs])]
    finally:
        hook.remove()
    slot_rows = len(rows)
    x = torch.stack(rows + rest).double()
    if layer.bias is not None:
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    x[slot_rows:] *= QUIET_FIT_WEIGHT
    y = torch.cat([torch.stack(targets), torch.zeros(len(rest), len(targets[0]), dtype=targets[0].dtype)]).double()
    gram = x.T @ x
    ridge = PROJECTOR_FIT_RIDGE * gram.diagonal().mean()
    solution = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype), x.T @ y)
    with torch.no_grad():
        layer.weight.copy_(solution[: layer.in_features].T.to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(solution[-1].to(layer.bias.dtype))
    x, y = x[:slot_rows], y[:slot_rows]
    error = (x @ solution - y).pow(2).sum(1).mean().sqrt() / y.norm(dim=1).mean()
    return float(error)
