"""The CoT-scaled log-probability: the pure formula, the token masks, and NaN-free padding."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from vlm_agent.algorithms.cot_log_prob import (
    cot_scaled_log_prob,
    suppress_token_logits,
    thought_action_masks,
    thought_action_masks_at,
    token_char_ends,
    token_log_probs_and_entropy,
)
from vlm_agent.prompting.parsing import parse_action
from vlm_agent.demo.tiny_tokenizer import train_tokenizer

CORPUS = [
    '{"current number": "3", "target number": "5", "thoughts": "3 is smaller than 5, so I add one.", "action": "+"}',
    '{"dealer card": "K", "player total": "15", "thoughts": "Basic strategy says hit.", "action": "hit"}',
    '{"action": "stand"}',
    "You can choose between ['-', '+']. Your response should be a valid json file in the following format:",
    '{"cards": [1, 10], "current formula": "10 +", "thoughts": "Append 1 to reach 12?", "action": "10"}',
] * 10


@pytest.fixture(scope="module")
def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny models' byte-level BPE (digits split), trained on CORPUS."""
    return train_tokenizer("qwen2_vl", corpus=CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def sentencepiece_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style tokenizer (Unigram + Metaspace, as Llama/Mistral use), built offline."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    # Trained on the format tables too: a character it never saw would decode to nothing.
    answers = [case[1] for case in FORMATS] + [case[1] for case in NO_ACTION]
    tokenizer.train_from_iterator(CORPUS + answers * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


TOKENIZERS = ["bpe_tokenizer", "sentencepiece_tokenizer"]


def encode_answer(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def masked_text(tokenizer: PreTrainedTokenizerFast, ids: list[int], mask: torch.Tensor) -> str:
    return tokenizer.decode([i for i, keep in zip(ids, mask.tolist(), strict=True) if keep], skip_special_tokens=False)


def test_cot_scaled_log_prob_matches_hand_computation() -> None:
    log_probs = torch.tensor([[-1.0, -2.0, -3.0, -4.0, -0.5], [-0.1, -0.2, -0.3, -0.4, -0.5]])
    thought = torch.tensor([[0, 1, 1, 0, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    action = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    result = cot_scaled_log_prob(log_probs, thought, action, cot_scale=0.5)
    # Row 0: 0.5 * (-2 - 3) + (-4 - 0.5) = -7.0; row 1 (no action): 0.5 * (-0.2 - 0.3 - 0.4 - 0.5) = -0.7.
    torch.testing.assert_close(result, torch.tensor([-7.0, -0.7]))
    torch.testing.assert_close(cot_scaled_log_prob(log_probs, thought, action, 0.0), torch.tensor([-4.5, 0.0]))
    torch.testing.assert_close(cot_scaled_log_prob(log_probs, thought, action, 1.0), torch.tensor([-9.5, -1.4]))


def test_cot_scaled_log_prob_ignores_padding_even_when_infinite_or_nan() -> None:
    log_probs = torch.tensor([-1.0, -2.0, -float("inf"), float("nan")])
    thought = torch.tensor([True, False, False, False])
    action = torch.tensor([False, True, False, False])
    assert cot_scaled_log_prob(log_probs, thought, action, 0.2).item() == pytest.approx(-2.2)


def test_cot_scaled_log_prob_gradient_only_reaches_masked_tokens() -> None:
    log_probs = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True)
    cot_scaled_log_prob(
        log_probs, torch.tensor([True, False, False]), torch.tensor([False, True, False]), 0.5
    ).backward()
    torch.testing.assert_close(log_probs.grad, torch.tensor([0.5, 1.0, 0.0]))


def test_cot_scale_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="cot_scale"):
        cot_scaled_log_prob(torch.zeros(2), torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool), 1.5)


# Every answer format parse_action accepts, with the character where its action part begins:
# the first character of the action key the parser uses, or None for a bare answer (all action).
# (id, answer, legal actions, the text the action part starts with or None)
FORMATS = [
    ("double_quoted_json", '{"thoughts": "3 is less than 5, add one.", "action": "+"}', ["-", "+"], '"action"'),
    ("single_quotes", "{'thoughts': 'I will stand.', 'action': 'stand'}", ["stand", "hit"], "'action'"),
    ("curly_quotes", "{\u201cthoughts\u201d: \u201cgo\u201d, \u201caction\u201d: \u201chit\u201d}", ["stand", "hit"],
     "\u201caction\u201d"),
    ("upper_case_key", '{"thoughts": "x", "ACTION" : "Stand"}', ["stand", "hit"], '"ACTION"'),
    ("bare_json5_key", '{thoughts: "up", action: "+"}', ["-", "+"], "action"),
    ("bare_key_line", "I think 13 against a 2 is safe.\nAction: stand", ["stand", "hit"], "Action"),
    ("markdown_bold_key", "**Thoughts:** draw one more.\n**Action:** hit", ["stand", "hit"], "Action"),
    ("markdown_bold_value", "Thoughts: draw.\nAction: **hit**", ["stand", "hit"], "Action"),
    ("code_fence", '```json\n{"thoughts": "10 then +", "action": "10"}\n```', ["1", "10", "+"], '"action"'),
    ("trailing_comma", '{"cards": [1, 10,], "thoughts": "one", "action": "1",}', ["1", "10", "+"], '"action"'),
    ("number_without_quotes", '{"thoughts": "ten", "action": 10}', ["1", "10", "+"], '"action"'),
    ("prose_around_json", 'Sure!\n{"thoughts": "hit me", "action": "hit"}\nGood luck.', ["stand", "hit"], '"action"'),
    ("action_first", '{"action": "stand", "thoughts": "19 is enough"}', ["stand", "hit"], '"action"'),
    ("contained_value", '{"thoughts": "x", "action": "hit (one more card)"}', ["stand", "hit"], '"action"'),
    ("zero_width_in_number", '{"thoughts": "ten", "action": "1\u200b0"}', ["1", "10", "+"], '"action"'),
    ("bare_answer", "hit", ["stand", "hit"], None),
    ("bare_quoted_answer", '"+"', ["-", "+"], None),
    ("bare_fenced_answer", "```\nstand\n```", ["stand", "hit"], None),
    ("bare_bold_answer", "**stand**", ["stand", "hit"], None),
]
# Answers without a usable action: every token is action (the first included), the CoT mask is empty.
NO_ACTION = [
    ("no_key", '{"thoughts": "the action is +, I think"', ["-", "+"]),
    ("cut_in_value", '{"thoughts": "x", "action": "1', ["1", "10", "+"]),
    ("illegal_value", '{"thoughts": "x", "action": "double down"}', ["stand", "hit"]),
    ("ambiguous_list", '{"thoughts": "x", "action": ["-", "+"]}', ["-", "+"]),
    ("prose_only", "I would rather hit here.", ["stand", "hit"]),
]


def expected_masks(tokenizer: PreTrainedTokenizerFast, ids: list[int], split: int | None) -> tuple[list, list]:
    """The definition, restated from decoded prefixes: the action part is the first token whose decoded
    prefix (special tokens skipped) reaches past ``split``, and every token after it; CoT is every
    earlier token but the first."""
    if split is None:
        return [False] * len(ids), [True] * len(ids)
    ends = [len(tokenizer.decode(ids[: i + 1], skip_special_tokens=True)) for i in range(len(ids))]
    first = min(i for i, end in enumerate(ends) if end > split)
    return [0 < i < first for i in range(len(ids))], [i >= first for i in range(len(ids))]


@pytest.mark.parametrize("tokenizer_name", TOKENIZERS)
@pytest.mark.parametrize(("answer", "legal", "marker"), [case[1:] for case in FORMATS], ids=[c[0] for c in FORMATS])
def test_masks_split_where_the_parser_reads_the_action(
    answer: str, legal: list[str], marker: str | None, tokenizer_name: str, request: pytest.FixtureRequest
) -> None:
    tokenizer = request.getfixturevalue(tokenizer_name)
    ids = encode_answer(tokenizer, answer)
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert parse_action(decoded, legal).valid, decoded  # the tokenizer kept the format
    split = None if marker is None else decoded.index(marker)
    expected_thought, expected_action = expected_masks(tokenizer, ids, 0 if split is None else split)
    thought, action = thought_action_masks(tokenizer, ids, legal)
    assert action.tolist() == expected_action
    assert thought.tolist() == expected_thought
    assert action.any() and action[-1], "the tokens that chose the action and the EOS are action"
    if marker is None:
        assert not thought.any(), "a bare answer is all action: nothing of it is weighted by lambda"
    else:
        assert marker in masked_text(tokenizer, ids, action)


@pytest.mark.parametrize("tokenizer_name", TOKENIZERS)
@pytest.mark.parametrize(("answer", "legal"), [case[1:] for case in NO_ACTION], ids=[c[0] for c in NO_ACTION])
def test_without_a_usable_action_every_token_is_action(
    answer: str, legal: list[str], tokenizer_name: str, request: pytest.FixtureRequest
) -> None:
    tokenizer = request.getfixturevalue(tokenizer_name)
    ids = encode_answer(tokenizer, answer)
    thought, action = thought_action_masks(tokenizer, ids, legal)
    assert action.all(), "an unusable answer is judged whole by the invalid-answer rule"
    assert not thought.any()


@pytest.mark.parametrize("cot_scale", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("answer", "legal"), [case[1:] for case in NO_ACTION], ids=[c[0] for c in NO_ACTION])
def test_an_unusable_answer_carries_gradient_at_every_lambda(
    answer: str, legal: list[str], cot_scale: float, bpe_tokenizer: PreTrainedTokenizerFast
) -> None:
    """The invalid-answer penalty must be able to push an unusable answer down, lambda = 0 included
    (before, its action mask was empty and its log-prob exactly 0 at lambda = 0: no gradient)."""
    ids = encode_answer(bpe_tokenizer, answer)
    thought, action = thought_action_masks(bpe_tokenizer, ids, legal)
    logits = torch.randn(len(ids), 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    targets = torch.randint(0, 7, (len(ids),), generator=torch.Generator().manual_seed(1))
    token_log_probs = torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0]
    log_prob = cot_scaled_log_prob(token_log_probs[None], thought[None], action[None], cot_scale=cot_scale)
    (gradient,) = torch.autograd.grad(log_prob.sum(), logits)
    # Every generated token's logits get gradient, the first included.
    assert (gradient.abs().sum(-1) > 0).all()
    assert log_prob.item() == pytest.approx(token_log_probs.sum().item(), abs=1e-12)


@pytest.mark.parametrize("tokenizer_name", TOKENIZERS)
def test_masks_split_at_the_action_key(tokenizer_name: str, request: pytest.FixtureRequest) -> None:
    tokenizer = request.getfixturevalue(tokenizer_name)
    answer = '{"current number": "3", "thoughts": "3 is smaller than 5, so I add one.", "action": "+"}'
    ids = encode_answer(tokenizer, answer)
    thought, action = thought_action_masks(tokenizer, ids, ["-", "+"])

    assert not (thought & action).any()
    assert not thought[0] and not action[0], "the first generated token is in neither sum"
    assert (thought | action)[1:].all(), "every other token is counted exactly once"
    action_text = masked_text(tokenizer, ids, action)
    thought_text = masked_text(tokenizer, ids, thought)
    assert action_text.replace(" ", "").startswith('"action":"+"}')
    assert action_text.endswith(tokenizer.eos_token)
    assert "action" not in thought_text and "smaller than 5" in thought_text
    # The action part begins at the first token whose characters reach the key's opening quote.
    first_action = int(action.nonzero()[0])
    assert thought[first_action - 1]


@pytest.mark.parametrize("tokenizer_name", TOKENIZERS)
def test_action_only_answer_has_no_cot(tokenizer_name: str, request: pytest.FixtureRequest) -> None:
    tokenizer = request.getfixturevalue(tokenizer_name)
    ids = encode_answer(tokenizer, '{"action": "stand"}')
    thought, action = thought_action_masks(tokenizer, ids, ["stand", "hit"])
    assert not thought.any()
    assert masked_text(tokenizer, ids, action).replace(" ", "").endswith('"stand"}' + tokenizer.eos_token)


def test_the_last_of_repeated_fields_does_not_move_the_split(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    """The parser uses the first of agreeing fields; the action part starts at its key."""
    answer = '{"thoughts": "x", "action": "hit"}\n{"action": "hit"}'
    ids = encode_answer(bpe_tokenizer, answer)
    _, action = thought_action_masks(bpe_tokenizer, ids, ["stand", "hit"])
    assert masked_text(bpe_tokenizer, ids, action).lstrip(' ,"').startswith('action": "hit"}\n{"action"')


def test_empty_completion_gives_empty_masks(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    thought, action = thought_action_masks(bpe_tokenizer, [], ["stand", "hit"])
    assert thought.shape == action.shape == (0,)
    thought, action = thought_action_masks_at(bpe_tokenizer, [], None)
    assert thought.shape == action.shape == (0,)


def test_a_split_outside_the_answer_is_refused(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    ids = encode_answer(bpe_tokenizer, "hit")
    with pytest.raises(ValueError, match="outside the decoded answer"):
        thought_action_masks_at(bpe_tokenizer, ids, 3)


def test_char_ends_cover_the_decoded_text(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    ids = encode_answer(bpe_tokenizer, '{"action": "é+"}')  # a two-byte character split over byte tokens
    text, ends = token_char_ends(bpe_tokenizer, ids)
    assert ends == sorted(ends) and ends[-1] == len(text)
    assert text == bpe_tokenizer.decode(ids, skip_special_tokens=True) == '{"action": "é+"}'
    assert ends[-2] == ends[-1], "the EOS covers no characters of the parsed text"


# -- the definition with hand-computed numbers ------------------------------------------------


@pytest.fixture(scope="module")
def hand_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with a hand-written vocabulary, so that a test chooses every token."""
    pieces = ["ok", ",", "\u0120{'", "action", "':", "\u0120'", "hit", "'}", '{"', '":', '\u0120"', "+", '"}', "</s>"]
    tokenizer = Tokenizer(models.BPE(vocab={piece: i for i, piece in enumerate(pieces)}, merges=[]))
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>")


@pytest.mark.parametrize(
    ("pieces", "legal", "log_probs", "expected"),
    [
        # "ok, {'action': 'hit'}": the action key starts at character 5, inside the token " {'"
        # (characters 3-5), which therefore is action. CoT = token 1 (","), action = tokens 2-8;
        # token 0 is in neither sum.
        # lambda = 0.5: 0.5 * (-0.5) + (-0.25 - 0.125 - 0.0625 - 1.0 - 2.0 - 0.5 - 0.25) = -0.25 - 4.1875
        (["ok", ",", "\u0120{'", "action", "':", "\u0120'", "hit", "'}", "</s>"], ["stand", "hit"],
         [-1.5, -0.5, -0.25, -0.125, -0.0625, -1.0, -2.0, -0.5, -0.25], -4.4375),
        # "hit": a bare answer is all action, the first token included: -0.7 - 0.1.
        (["hit", "</s>"], ["stand", "hit"], [-0.7, -0.1], -0.8),
        # '{"action": "+"}': the key's quote is in the first token '{"', so all of it is action:
        # -0.3 - 0.2 - 0.1 - 0.05 - 1.0 - 0.05 - 0.3.
        (['{"', "action", '":', '\u0120"', "+", '"}', "</s>"], ["-", "+"],
         [-0.3, -0.2, -0.1, -0.05, -1.0, -0.05, -0.3], -2.0),
        # '{"action": "hit"}' with hit not legal: no usable action, all of it action, token 0 included,
        # unscaled by lambda: -0.3 - 0.2 - 0.1 - 0.05 - 1.0 - 0.05 - 0.3.
        (['{"', "action", '":', '\u0120"', "hit", '"}', "</s>"], ["-", "+"],
         [-0.3, -0.2, -0.1, -0.05, -1.0, -0.05, -0.3], -2.0),
    ],
    ids=["single_quoted_key_inside_a_token", "bare_answer", "json_key_in_the_first_token", "illegal_action"],
)  # fmt: skip
def test_cot_scaled_log_prob_of_an_answer_by_hand(
    hand_tokenizer: PreTrainedTokenizerFast,
    pieces: list[str],
    legal: list[str],
    log_probs: list[float],
    expected: float,
) -> None:
    ids = hand_tokenizer.convert_tokens_to_ids(pieces)
    thought, action = thought_action_masks(hand_tokenizer, ids, legal)
    result = cot_scaled_log_prob(torch.tensor(log_probs, dtype=torch.float64), thought, action, cot_scale=0.5)
    assert result.item() == pytest.approx(expected, abs=1e-12)


def test_hand_tokenizer_decodes_as_written(hand_tokenizer: PreTrainedTokenizerFast) -> None:
    """Guards the hand-computed test above: its tokens decode to the answers its comments state."""
    ids = hand_tokenizer.convert_tokens_to_ids(["ok", ",", "\u0120{'", "action", "':", "\u0120'", "hit", "'}", "</s>"])
    assert hand_tokenizer.decode(ids, skip_special_tokens=True) == "ok, {'action': 'hit'}"
    assert len(hand_tokenizer.decode(ids[:3], skip_special_tokens=True)) == 6  # " {'" ends past the key's start, 5


LEGAL_FOR_PROPERTIES = ["+", "-", "hit", "10", "go to cabinet 2"]


@settings(max_examples=40, deadline=None)
@given(
    thoughts=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    action=st.sampled_from(LEGAL_FOR_PROPERTIES),
    with_key=st.booleans(),
)
def test_masks_partition_any_answer(thoughts: str, action: str, with_key: bool) -> None:
    tokenizer = train_tokenizer("qwen2_vl", corpus=CORPUS, vocab_size=400)
    answer = f'{{"thoughts": "{thoughts}", "action": "{action}"}}' if with_key else thoughts
    ids = encode_answer(tokenizer, answer)
    thought, action_mask = thought_action_masks(tokenizer, ids, LEGAL_FOR_PROPERTIES)
    assert not (thought & action_mask).any()
    assert (thought | action_mask)[1:].all()
    parsed = parse_action(tokenizer.decode(ids, skip_special_tokens=True), LEGAL_FOR_PROPERTIES)
    assert action_mask.all() or parsed.valid, "an unusable answer is all action"
    assert thought.any() <= parsed.valid, "only an answer with a usable action has thoughts"
    if parsed.valid:
        # Action tokens form one contiguous block that runs to the end.
        first = int(action_mask.nonzero()[0])
        assert action_mask[first:].all()


@settings(max_examples=40, deadline=None)
@given(
    thoughts=st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=0x1F600, exclude_categories=("Cs",)), max_size=30
    ),
    action=st.sampled_from(["+", "é", "hit", "go to cabinet 2"]),
    key=st.sampled_from(['"action"', "'action'", "Action", None]),
)
def test_masks_follow_the_overlap_definition_for_any_text(thoughts: str, action: str, key: str | None) -> None:
    """thought_action_masks stops decoding at the first action token; the result must equal the
    definition applied to every decoded prefix (multi-byte characters included)."""
    tokenizer = train_tokenizer("qwen2_vl", corpus=CORPUS, vocab_size=400)
    legal = ["+", "é", "hit", "go to cabinet 2"]
    if key is None:
        answer = action  # a bare answer
    elif key == "Action":
        answer = f"{thoughts}\nAction: {action}"
    else:
        answer = f"{{'thoughts': {json.dumps(thoughts)}, {key}: {json.dumps(action)}}}"
    ids = encode_answer(tokenizer, answer)
    parsed = parse_action(tokenizer.decode(ids, skip_special_tokens=True), legal)
    expected_thought, expected_action = expected_masks(tokenizer, ids, parsed.action_part_start)
    thought, action_mask = thought_action_masks(tokenizer, ids, legal)
    assert action_mask.tolist() == expected_action
    assert thought.tolist() == expected_thought


def test_token_log_probs_match_log_softmax_at_temperature() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    ids = torch.randint(0, 5, (2, 4))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    log_probs, entropy = token_log_probs_and_entropy(logits, ids, mask, temperature=0.5)
    expected = torch.log_softmax(logits / 0.5, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(log_probs[mask], expected[mask])
    probs = torch.softmax(logits / 0.5, -1)
    torch.testing.assert_close(entropy[mask], -(probs * probs.log()).sum(-1)[mask])
    assert (log_probs[~mask] == 0).all() and (entropy[~mask] == 0).all()


def test_suppressed_tokens_and_padding_never_give_nan() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 6, requires_grad=True)
    pad_id = 5  # suppressed, and used as padding after EOS
    ids = torch.tensor([[1, pad_id, pad_id]])
    mask = torch.tensor([[True, False, False]])
    log_probs, entropy = token_log_probs_and_entropy(logits, ids, mask, temperature=0.2, suppressed_token_ids=[4, 5])
    assert torch.isfinite(log_probs).all() and torch.isfinite(entropy).all()
    expected = torch.log_softmax(logits[0, 0, :4] / 0.2, -1)[1]
    assert log_probs[0, 0].item() == pytest.approx(expected.item(), abs=1e-5)
    scaled = cot_scaled_log_prob(log_probs, mask, torch.zeros_like(mask), 0.5) + entropy.sum()
    scaled.backward()
    assert torch.isfinite(logits.grad).all()


def test_suppress_token_logits_uses_a_finite_floor() -> None:
    logits = suppress_token_logits(torch.zeros(2, 3), [1])
    assert torch.isfinite(logits).all()
    assert math.isclose(torch.softmax(logits, -1)[0, 1].item(), 0.0, abs_tol=0.0)
