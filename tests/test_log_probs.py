"""The CoT-scaled log-probability: the pure formula, the token masks, and NaN-free padding."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from vlm_agent.log_probs import (
    action_part_start,
    cot_scaled_log_prob,
    suppress_token_logits,
    thought_action_masks,
    token_char_ends,
    token_log_probs_and_entropy,
)
from vlm_agent.tiny_models import train_tokenizer

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
    tokenizer.train_from_iterator(CORPUS, trainer)
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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"thoughts": "x", "action": "+"}', 18),
        ('{"thoughts": "the action is +", "ACTION" : "+"}', 32),
        ('{"thoughts": "no key here"}', None),
        ("", None),
    ],
)
def test_action_part_start(text: str, expected: int | None) -> None:
    assert action_part_start(text) == expected


@pytest.mark.parametrize("tokenizer_name", TOKENIZERS)
def test_masks_split_at_the_action_key(tokenizer_name: str, request: pytest.FixtureRequest) -> None:
    tokenizer = request.getfixturevalue(tokenizer_name)
    answer = '{"current number": "3", "thoughts": "3 is smaller than 5, so I add one.", "action": "+"}'
    ids = encode_answer(tokenizer, answer)
    thought, action = thought_action_masks(tokenizer, ids)

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
def test_without_action_key_everything_but_the_first_token_is_cot(
    tokenizer_name: str, request: pytest.FixtureRequest
) -> None:
    tokenizer = request.getfixturevalue(tokenizer_name)
    ids = encode_answer(tokenizer, '{"thoughts": "the action is +, I think"')
    thought, action = thought_action_masks(tokenizer, ids)
    assert not action.any()
    assert not thought[0] and thought[1:].all()


@pytest.mark.parametrize("tokenizer_name", TOKENIZERS)
def test_action_only_answer_has_no_cot(tokenizer_name: str, request: pytest.FixtureRequest) -> None:
    tokenizer = request.getfixturevalue(tokenizer_name)
    ids = encode_answer(tokenizer, '{"action": "stand"}')
    thought, action = thought_action_masks(tokenizer, ids)
    assert not thought.any()
    assert masked_text(tokenizer, ids, action).replace(" ", "").endswith('"stand"}' + tokenizer.eos_token)


def test_empty_completion_gives_empty_masks(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    thought, action = thought_action_masks(bpe_tokenizer, [])
    assert thought.shape == action.shape == (0,)


def test_char_ends_cover_the_decoded_text(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    ids = encode_answer(bpe_tokenizer, '{"action": "é+"}')  # a two-byte character split over byte tokens
    text, ends = token_char_ends(bpe_tokenizer, ids)
    assert ends == sorted(ends) and ends[-1] == len(text)
    assert text == bpe_tokenizer.decode(ids, skip_special_tokens=False)


@settings(max_examples=40, deadline=None)
@given(
    thoughts=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    action=st.sampled_from(["+", "-", "hit", "10", "go to cabinet 2"]),
    with_key=st.booleans(),
)
def test_masks_partition_any_answer(thoughts: str, action: str, with_key: bool) -> None:
    tokenizer = train_tokenizer("qwen2_vl", corpus=CORPUS, vocab_size=400)
    answer = f'{{"thoughts": "{thoughts}", "action": "{action}"}}' if with_key else thoughts
    ids = encode_answer(tokenizer, answer)
    thought, action_mask = thought_action_masks(tokenizer, ids)
    assert not (thought & action_mask).any()
    assert (thought | action_mask)[1:].all()
    start = action_part_start(tokenizer.decode(ids, skip_special_tokens=False))
    assert action_mask.any() == (start is not None)
    if start is not None:
        # Action tokens form one contiguous block that runs to the end.
        first = int(action_mask.nonzero()[0])
        assert action_mask[first:].all()


@settings(max_examples=40, deadline=None)
@given(
    thoughts=st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=0x1F600, exclude_categories=("Cs",)), max_size=30
    ),
    action=st.sampled_from(["+", "é", "hit", "go to cabinet 2"]),
    with_key=st.booleans(),
)
def test_masks_follow_the_overlap_definition_over_all_char_ends(thoughts: str, action: str, with_key: bool) -> None:
    """thought_action_masks stops decoding at the first action token; the result must equal the
    definition applied to every token's end (multi-byte characters included)."""
    tokenizer = train_tokenizer("qwen2_vl", corpus=CORPUS, vocab_size=400)
    answer = f'{{"thoughts": "{thoughts}", "action": "{action}"}}' if with_key else thoughts
    ids = encode_answer(tokenizer, answer)
    text, ends = token_char_ends(tokenizer, ids)
    split = action_part_start(text)
    expected_action = [split is not None and end > split for end in ends]
    expected_thought = [i > 0 and not is_action for i, is_action in enumerate(expected_action)]
    thought, action_mask = thought_action_masks(tokenizer, ids)
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
