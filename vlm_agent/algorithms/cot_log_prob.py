"""The CoT-scaled log-probability of a generated answer (RL4VLM, Zhai et al. 2024, Sec. 4.2).

A VLM answers with text such as ``{"thoughts": "...", "action": "+"}``. Its log-likelihood as
a policy over the executed action is split at the ``"action"`` key:

    log pi(a | o, v_in) = lambda * sum(log p(CoT tokens)) + sum(log p(action tokens))

Which tokens are which is decided by the parser (:func:`vlm_agent.prompting.parsing.parse_action`, the one
place that knows which text chose the action) and the character span each generated token covers,
never from hard-coded token ids (the original code matched three token ids of ``"action":`` for one
tokenizer version and broke for others).

Definitions used throughout this project (tested in ``tests/test_log_probs.py``):

* The answer's text is its decoding with special tokens skipped: the text the policy parses.
* The *action part* starts at :attr:`ParsedAction.action_part_start <vlm_agent.prompting.parsing.ParsedAction>`
  and runs to the end of the completion (the EOS token included). For an answer with an action
  field that is the first character of the key the parser used, whatever its form: ``"action"``,
  ``'action'``, curly-quoted, bare (``Action: hit``, ``**Action:** hit``); the key, its value, the
  closing ``"}`` and the EOS token are action. For a bare answer (``hit``, ``"+"``, a fenced
  ``stand``) the whole answer is action: it has no thoughts. The key itself counts as action, as
  in the original code (its action sum starts at the first of the token ids of ``"action":``), so
  every generated token but the first lands in exactly one of the two sums (no token is silently
  left without gradient); for a trained model the key and the closing braces are near-deterministic
  (log p ~ 0), so they barely change the sum. (The original uses that split only when
  ``"action":`` occurs more than once, at the last occurrence; with a single occurrence, the usual
  case, its action sum is the last five scored tokens instead.)
* A token belongs to the action part when its characters *overlap* it: token ``i`` is action when
  the decoded prefix ``ids[: i + 1]`` is longer than ``action_part_start``, so a BPE token ``, "``
  that ends with the key's opening quote counts as action. Every later token is action too.
* The *CoT part* is every token before the action part, except the first generated token, which
  is in neither sum. (A first token that overlaps the action part, as in a bare ``hit``, is action
  and counts.) The original implementation leaves out more: it never scores the first generated
  token (its gather starts at the logits that predict the second one) and its CoT slice also drops
  the second ("its logprob is very very small").
* Without a usable action (the parser found none, or an illegal, ambiguous or cut-off one) the
  whole completion is *action*, its first token included, and the CoT mask is empty: the log-prob
  is ``sum(log p(every token))`` whatever lambda is. The text chose no action, so nothing in it is
  a thought that led to one; it is the answer the invalid-answer rule judged, and all of it must
  carry the gradient of that judgement. (Scoring it as CoT, as before, gave it log-prob exactly 0
  at lambda = 0: the invalid-answer penalty could never push it down, and in the PPO table the
  lambda = 0 rows let unusable answers grow. The original code scored the last five tokens.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from vlm_agent.prompting.parsing import parse_action


class _Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer these functions use."""

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


def cot_scaled_log_prob(
    token_log_probs: torch.Tensor,
    thought_mask: torch.Tensor,
    action_mask: torch.Tensor,
    cot_scale: float,
) -> torch.Tensor:
    """Return ``cot_scale * sum(log p[thought]) + sum(log p[action])`` per sequence.

    Formula (RL4VLM, Eq. 4): ``log pi(a|o) = lambda * sum_{t in CoT} log p_t + sum_{t in action} log p_t``.

    Args:
        token_log_probs: ``[..., T]`` per-token log-probabilities. Entries outside both masks may be
            anything, ``-inf`` and ``NaN`` included (padding): they are selected away, never
            multiplied by zero.
        thought_mask: ``[..., T]`` bool, True on CoT tokens.
        action_mask: ``[..., T]`` bool, True on action tokens.
        cot_scale: lambda in [0, 1].

    Returns:
        ``[...]`` tensor of scaled log-probabilities.
    """
    if not 0.0 <= cot_scale <= 1.0:
        raise ValueError(f"cot_scale must lie in [0, 1] (paper: 0.2-0.5), got {cot_scale}")
    zero = torch.zeros((), dtype=token_log_probs.dtype, device=token_log_probs.device)
    thought_sum = torch.where(thought_mask.bool(), token_log_probs, zero).sum(-1)
    action_sum = torch.where(action_mask.bool(), token_log_probs, zero).sum(-1)
    return cot_scale * thought_sum + action_sum


def token_char_ends(tokenizer: _Tokenizer, token_ids: Sequence[int]) -> tuple[str, list[int]]:
    """Decode ``token_ids`` and return ``(text, ends)``: ``text[:ends[i]]`` is what tokens ``0..i`` produce.

    ``text`` is the decoding with special tokens skipped (what the policy parses); a special token
    (the EOS) covers no characters. Works for any tokenizer that can decode (byte-level BPE,
    SentencePiece/Metaspace, WordPiece): the end of token ``i`` is the length of the decoded prefix
    ``ids[: i + 1]``. Decoding prefixes, not single tokens, is what makes this right for tokenizers
    whose decoding of a token depends on its neighbours (Metaspace drops the leading space of the
    first token; byte-level BPE splits a multi-byte character over tokens).
    """
    ids = [int(i) for i in token_ids]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return text, list(_prefix_ends(tokenizer, ids, text))


def _prefix_ends(tokenizer: _Tokenizer, ids: list[int], text: str) -> Iterator[int]:
    """The ends of :func:`token_char_ends`, one decode each, lazily (callers may stop early).

    They never decrease: a prefix that ends inside a multi-byte character decodes to a replacement
    char, so each end is clamped to at least the previous one and at most ``len(text)``, which keeps
    spans well-formed. The last end is ``len(text)``.
    """
    previous = 0
    for i in range(len(ids)):
        if i == len(ids) - 1:
            yield len(text)
            return
        prefix_length = len(tokenizer.decode(ids[: i + 1], skip_special_tokens=True))
        previous = min(max(previous, prefix_length), len(text))
        yield previous


def thought_action_masks(
    tokenizer: _Tokenizer, completion_ids: Sequence[int], legal_actions: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean CoT and action masks over the generated tokens ``completion_ids`` (no padding).

    The answer is decoded (special tokens skipped) and parsed against ``legal_actions`` with
    :func:`vlm_agent.prompting.parsing.parse_action`, exactly as the policy reads it to choose the executed
    action; the masks split it where the parser says the action part begins
    (:func:`thought_action_masks_at`). See the module docstring for the definitions.
    """
    ids = [int(i) for i in completion_ids]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    parsed = parse_action(text, legal_actions)
    return thought_action_masks_at(tokenizer, ids, parsed.action_part_start)


def thought_action_masks_at(
    tokenizer: _Tokenizer, completion_ids: Sequence[int], action_part_start: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CoT and action masks for an answer whose action part begins at character ``action_part_start``.

    ``action_part_start`` is a position in the decoded answer (special tokens skipped), as
    :attr:`vlm_agent.prompting.parsing.ParsedAction.action_part_start` gives it, or ``None`` for an answer
    without a usable action. Returns two ``[len(completion_ids)]`` bool tensors that never overlap:
    the action mask is the first token whose characters reach past ``action_part_start`` and every
    token after it; the CoT mask is every earlier token but the first. Without a split (no usable
    action) every token is action and the CoT mask is empty.

    Cost: one decode of the whole answer, plus one decode per token up to the first action token
    (the ends never decrease, so every later token is action too); none without a split.
    """
    length = len(completion_ids)
    thought = torch.zeros(length, dtype=torch.bool)
    action = torch.zeros(length, dtype=torch.bool)
    if length == 0:
        return thought, action
    if action_part_start is None:
        action[:] = True
        return thought, action
    ids = [int(i) for i in completion_ids]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if not 0 <= action_part_start < len(text):
        raise ValueError(
            f"action_part_start {action_part_start} lies outside the decoded answer of {len(text)} characters: "
            "take it from parse_action on tokenizer.decode(completion_ids, skip_special_tokens=True)"
        )
    first_action = next(i for i, end in enumerate(_prefix_ends(tokenizer, ids, text)) if end > action_part_start)
    thought[1:first_action] = True
    action[first_action:] = True
    return thought, action


def suppress_token_logits(logits: torch.Tensor, suppressed_token_ids: Sequence[int]) -> torch.Tensor:
    """Set the logits of ``suppressed_token_ids`` to the dtype's most negative finite value.

    Generation suppresses special tokens (image placeholders, padding) with ``-inf``; recomputing
    log-probs must apply the same restriction. A finite floor gives the same softmax (``exp`` of it
    underflows to exactly 0) but keeps entropies finite (``0 * -inf`` would be NaN).
    """
    if len(suppressed_token_ids) == 0:
        return logits
    index = torch.as_tensor(list(suppressed_token_ids), dtype=torch.long, device=logits.device)
    floor = torch.finfo(logits.dtype).min
    return logits.index_fill(-1, index, floor)


def token_log_probs_and_entropy(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    token_mask: torch.Tensor,
    *,
    temperature: float,
    suppressed_token_ids: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities and entropies of the sampling distribution ``softmax(logits / T)``.

    Args:
        logits: ``[B, T, V]`` raw logits predicting ``token_ids``.
        token_ids: ``[B, T]`` the sampled tokens.
        token_mask: ``[B, T]`` True on real tokens, False on padding.
        temperature: the sampling temperature T (> 0).
        suppressed_token_ids: ids that generation was not allowed to sample.

    Returns:
        ``(log_probs, entropy)``, both ``[B, T]`` float32, exactly 0 on padding (never NaN).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scaled = logits.float() / temperature
    scaled = suppress_token_logits(scaled, suppressed_token_ids)
    log_probs = selective_log_softmax(scaled, token_ids, row_mask=token_mask)
    entropy = entropy_from_logits(scaled)
    entropy = torch.where(token_mask.bool(), entropy, torch.zeros_like(entropy))
    return log_probs, entropy
