"""VLMPolicy on real tiny models of each architecture: acting, re-scoring, gradients, saving."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import StaticCache

from vlm_agent.models import ModelSettings
from vlm_agent.parsing import InvalidActionPolicy, parse_action
from vlm_agent.policy import GenerationSettings, PolicySample, VLMPolicy, draw_from_probabilities
from vlm_agent.prompts import prompt_for
from vlm_agent.tiny_models import TINY_ARCHITECTURES

# Three observations whose prompts differ in length, so batching needs left padding.
TASKS = [
    ("gym_cards/NumberLine-v0", ["-", "+"]),
    ("gym_cards/Blackjack-v0", ["stand", "hit"]),
    ("gym_cards/EZPoints-v0", [str(n) for n in range(1, 11)] + ["+", "*", "="]),
]
MAX_NEW_TOKENS = 24


def observations(count: int, seed: int = 0) -> tuple[list[np.ndarray], list[str], list[list[str]]]:
    rng = np.random.default_rng(seed)
    images, prompts, legal = [], [], []
    for i in range(count):
        env_id, actions = TASKS[i % len(TASKS)]
        images.append(rng.integers(0, 256, size=(300, 300, 3), dtype=np.uint8))
        prompts.append(prompt_for(env_id).render("", actions))
        legal.append(actions)
    return images, prompts, legal


def make_policy(path: Path, *, use_lora: bool = True, seed: int = 0) -> VLMPolicy:
    settings = ModelSettings(path, use_lora=use_lora, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    return VLMPolicy.from_model(settings, GenerationSettings(max_new_tokens=MAX_NEW_TOKENS), seed=seed)


def perturb_lora(policy: VLMPolicy, seed: int = 1) -> None:
    """LoRA B starts at zero (adapter == base); give it weights so that the adapter matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in policy.model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


@pytest.fixture(scope="module")
def policies(tiny_model_dir: Callable[[str], Path]) -> dict[str, VLMPolicy]:
    return {arch: make_policy(tiny_model_dir(arch)) for arch in TINY_ARCHITECTURES}


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
@pytest.mark.parametrize("batch", [1, 3])
def test_act_returns_legal_actions_and_finite_scores(arch: str, batch: int, policies: dict[str, VLMPolicy]) -> None:
    policy = policies[arch]
    images, prompts, legal = observations(batch)
    out = policy.act(images, prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=np.random.default_rng(0))

    assert len(out.texts) == len(out.parsed) == len(out.samples) == batch
    for index, actions in zip(out.action_indices, legal, strict=True):
        assert 0 <= index < len(actions)
    assert out.log_probs.shape == out.values.shape == (batch,)
    assert torch.isfinite(out.log_probs).all() and torch.isfinite(out.values).all()
    assert (out.log_probs < 0).all()
    for sample, log_prob, value, text, parsed, actions in zip(
        out.samples, out.log_probs, out.values, out.texts, out.parsed, legal, strict=True
    ):
        assert sample.log_prob == pytest.approx(log_prob.item()) and sample.value == pytest.approx(value.item())
        assert 1 <= len(sample.completion_ids) <= MAX_NEW_TOKENS
        assert not sample.completion_ids.is_inference() and sample.completion_ids.device.type == "cpu"
        assert parsed == parse_action(text, actions)
        eos_positions = torch.isin(sample.completion_ids, torch.tensor(policy.eos_token_ids)).nonzero()
        assert len(eos_positions) == 0 or int(eos_positions[0]) == len(sample.completion_ids) - 1
        assert not torch.isin(sample.completion_ids, torch.tensor(policy.suppressed_token_ids)).any()


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_recomputed_log_probs_match_generation_scores(arch: str, policies: dict[str, VLMPolicy]) -> None:
    policy = policies[arch]
    images, prompts, _ = observations(3, seed=1)
    inputs = policy.prepare_inputs(images, prompts)
    policy.eval()
    with torch.no_grad():
        samples, generation_log_probs = policy.sample(inputs, seed=5, output_scores=True)
        scores = policy.evaluate(samples)
    assert generation_log_probs is not None
    width = scores.token_log_probs.shape[1]
    torch.testing.assert_close(scores.token_log_probs, generation_log_probs[:, :width], atol=1e-5, rtol=1e-5)
    assert (generation_log_probs[:, width:] == 0).all()
    # Batching must not change the scores: each sample alone gives the same numbers.
    with torch.no_grad():
        alone = torch.cat([policy.evaluate([sample]).log_probs for sample in samples])
    torch.testing.assert_close(alone, scores.log_probs, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_act_scores_from_generation_equal_a_second_forward(arch: str, policies: dict[str, VLMPolicy]) -> None:
    """act() takes log-probs and values from generation itself; recompute_scores=True re-scores with evaluate()."""
    policy = policies[arch]
    images, prompts, legal = observations(3, seed=14)
    runs = [
        policy.act(images, prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=np.random.default_rng(14),
                   recompute_scores=recompute)
        for recompute in (False, True)
    ]  # fmt: skip
    assert runs[0].texts == runs[1].texts
    torch.testing.assert_close(runs[0].log_probs, runs[1].log_probs, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(runs[0].values, runs[1].values, atol=1e-5, rtol=1e-5)
    for sample, log_prob, value in zip(runs[0].samples, runs[0].log_probs, runs[0].values, strict=True):
        assert sample.log_prob == pytest.approx(log_prob.item()) and sample.value == pytest.approx(value.item())


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_static_and_dynamic_key_value_caches_give_the_same_answers(
    arch: str, policies: dict[str, VLMPolicy], monkeypatch: pytest.MonkeyPatch
) -> None:
    """kv_cache only changes how the cache is stored: same answers, log-probs and values, batch with left padding.

    The static path really preallocates: generation writes into the StaticCache the policy made,
    sized for prompt + max_new_tokens; the dynamic path leaves the cache to Hugging Face.
    """
    policy = policies[arch]
    images, prompts, legal = observations(3, seed=16)
    runs, caches = {}, []
    make_kv_cache = policy.make_kv_cache

    def recording_make_kv_cache(max_length: int) -> StaticCache | None:
        cache = make_kv_cache(max_length)
        caches.append((max_length, cache))
        return cache

    monkeypatch.setattr(policy, "make_kv_cache", recording_make_kv_cache)
    prompt_length = policy.prepare_inputs(images, prompts)["input_ids"].shape[1]
    try:
        for kv_cache in ("dynamic", "static"):
            caches.clear()
            policy.settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, kv_cache=kv_cache)
            runs[kv_cache] = policy.act(
                images, prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=np.random.default_rng(16)
            )
            assert [length for length, _ in caches] == [prompt_length + MAX_NEW_TOKENS]
            cache = caches[0][1]
            if kv_cache == "dynamic":
                assert cache is None
            else:
                assert isinstance(cache, StaticCache) and cache.get_max_length() == prompt_length + MAX_NEW_TOKENS
                answer_length = max(len(sample.completion_ids) for sample in runs[kv_cache].samples)
                # Every prompt token and every generated token but the last went through the cache.
                assert cache.get_seq_length() == prompt_length + answer_length - 1
    finally:
        policy.settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS)
    assert runs["static"].texts == runs["dynamic"].texts
    torch.testing.assert_close(runs["static"].log_probs, runs["dynamic"].log_probs, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(runs["static"].values, runs["dynamic"].values, atol=1e-5, rtol=1e-5)


def test_answers_ending_early_stop_generation_and_keep_matching_scores(tiny_model_dir: Callable[[str], Path]) -> None:
    """EOS ends an answer (the batch stops once all have ended); what follows it is never scored."""
    policy = VLMPolicy.from_model(
        ModelSettings(tiny_model_dir("qwen2_vl"), use_lora=False),
        GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, temperature=1.0),
    )
    images, prompts, legal = observations(6, seed=15)
    with torch.no_grad():  # make EOS likely: its output row points along the prompts' mean final hidden state
        inputs = policy.prepare_inputs(images, prompts)
        hidden = policy.model(**inputs, output_hidden_states=True).hidden_states[-1][:, -1].mean(0)
        policy._base_model.get_output_embeddings().weight[policy.eos_token_ids[0]] = hidden / hidden.norm() ** 2 * 6.0
    runs = [
        policy.act(images, prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=np.random.default_rng(15),
                   recompute_scores=recompute)
        for recompute in (False, True)
    ]  # fmt: skip
    lengths = [len(sample.completion_ids) for sample in runs[0].samples]
    assert max(lengths) < MAX_NEW_TOKENS and len(set(lengths)) > 1
    for sample in runs[0].samples:
        assert int(sample.completion_ids[-1]) in policy.eos_token_ids
    torch.testing.assert_close(runs[0].log_probs, runs[1].log_probs, atol=1e-4, rtol=1e-5)


def test_model_generation_config_cannot_change_the_sampling_distribution(policies: dict[str, VLMPolicy]) -> None:
    """A model's own generation_config (real Qwen2-VL: repetition_penalty=1.05, top_k=1) fills what the
    policy leaves unset; the policy must neutralise it, or the scores would not be those of its samples."""
    policy = policies["qwen2_vl"]
    config = policy._base_model.generation_config
    saved = config.to_dict()
    images, prompts, _ = observations(2, seed=16)
    inputs = policy.prepare_inputs(images, prompts)
    try:
        config.repetition_penalty, config.no_repeat_ngram_size, config.top_k, config.temperature = 3.0, 1, 3, 0.05
        with torch.no_grad():
            samples, generation_log_probs = policy.sample(inputs, seed=3, output_scores=True)
            recomputed = policy.evaluate(samples)
        assert generation_log_probs is not None
        width = recomputed.token_log_probs.shape[1]
        torch.testing.assert_close(recomputed.token_log_probs, generation_log_probs[:, :width], atol=1e-5, rtol=1e-5)
        config.bad_words_ids = [[5]]
        with pytest.raises(ValueError, match=r"generation_config sets \['bad_words_ids'\]"):
            policy.sample(inputs, seed=3)
    finally:
        for name in ("repetition_penalty", "no_repeat_ngram_size", "top_k", "temperature", "bad_words_ids"):
            setattr(config, name, saved.get(name))


def test_draw_from_probabilities_has_the_right_frequencies() -> None:
    probs = torch.tensor([[0.0, 2.0, 0.0, 5.0, 3.0, 0.0]]).repeat(40_000, 1)  # unnormalised on purpose
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        draws = draw_from_probabilities(probs)
    frequencies = torch.bincount(draws, minlength=6).double() / len(draws)
    torch.testing.assert_close(frequencies, torch.tensor([0.0, 0.2, 0.0, 0.5, 0.3, 0.0], dtype=torch.float64),
                               atol=0.01, rtol=0)  # fmt: skip
    # The interval ends: U = 0 gives the first token with mass, U at the total (rounding) the last one.
    ends = draw_from_probabilities(probs[:2], uniform=torch.tensor([[0.0], [1.0]]))
    assert ends.tolist() == [1, 4]


def test_scaled_log_prob_is_lambda_cot_plus_action(policies: dict[str, VLMPolicy]) -> None:
    policy = policies["qwen2_vl"]
    images, prompts, legal = observations(3, seed=2)
    out = policy.act(images, prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=np.random.default_rng(2))
    # A hand-made answer with an action key, scored through the same path.
    tokenizer = policy.processor.tokenizer
    answer_ids = tokenizer('{"thoughts": "go up", "action": "+"}', add_special_tokens=False)["input_ids"]
    answer_ids.append(policy.eos_token_ids[0])
    sample = out.samples[0]
    from vlm_agent.log_probs import thought_action_masks

    thought, action = thought_action_masks(tokenizer, answer_ids)
    crafted = PolicySample(
        sample.prompt_ids, sample.prompt_token_inputs, sample.image_inputs,
        torch.tensor(answer_ids), thought, action, 0.0, 0.0,
    )  # fmt: skip
    with torch.no_grad():
        scores = policy.evaluate([crafted])
    tokens = scores.token_log_probs[0]
    expected = 0.5 * tokens[thought].sum() + tokens[action].sum()
    assert action.any() and thought.any()
    assert scores.log_probs[0].item() == pytest.approx(expected.item(), rel=1e-6)
    assert scores.log_probs[0].item() != pytest.approx(tokens.sum().item())


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_evaluate_gives_gradients_to_lora_and_value_head(arch: str, policies: dict[str, VLMPolicy]) -> None:
    policy = policies[arch]
    images, prompts, legal = observations(2, seed=3)
    out = policy.act(images, prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=np.random.default_rng(3))
    policy.train()
    for parameter in policy.trainable_parameters():
        parameter.grad = None
    scores = policy.evaluate(out.samples)
    (scores.log_probs.sum() + scores.values.sum() + scores.entropy.sum()).backward()
    policy.eval()
    lora_b = [
        p for n, p in policy.model.named_parameters() if "lora_B" in n and "vision" not in n and "visual" not in n
    ]
    assert lora_b and all(p.grad is not None and torch.isfinite(p.grad).all() for p in lora_b)
    assert any(p.grad.abs().sum() > 0 for p in lora_b)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.value_head.parameters())
    frozen = [p for n, p in policy.model.named_parameters() if "lora_" not in n]
    assert all(not p.requires_grad for p in frozen)
    # The stored rollout scores are what a no-grad evaluation gives.
    torch.testing.assert_close(scores.log_probs.detach(), out.log_probs, atol=1e-4, rtol=1e-5)


def test_reference_log_probs_come_from_the_base_model(tiny_model_dir: Callable[[str], Path]) -> None:
    path = tiny_model_dir("llava_next")
    policy = make_policy(path)
    perturb_lora(policy)
    base = make_policy(path, use_lora=False)
    images, prompts, legal = observations(2, seed=4)
    out = policy.act(images, prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=np.random.default_rng(4))
    with torch.no_grad():
        with_reference = policy.evaluate(out.samples, with_reference=True)
        base_scores = base.evaluate(out.samples)
    assert with_reference.ref_log_probs is not None
    torch.testing.assert_close(with_reference.ref_log_probs, base_scores.log_probs, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(with_reference.log_probs, with_reference.ref_log_probs, atol=1e-3)
    with pytest.raises(ValueError, match="LoRA adapter"):
        base.evaluate(out.samples, with_reference=True)


@pytest.mark.parametrize("arch", ["qwen2_vl", "llava_next"])
def test_save_and_load_reproduce_scores(arch: str, tiny_model_dir: Callable[[str], Path], tmp_path: Path) -> None:
    policy = make_policy(tiny_model_dir(arch))
    perturb_lora(policy)
    images, prompts, legal = observations(3, seed=5)
    out = policy.act(images, prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=np.random.default_rng(5))
    policy.save_pretrained(tmp_path / "policy")
    assert (tmp_path / "policy" / "adapter_config.json").is_file()
    assert not (tmp_path / "policy" / "model.safetensors").exists(), "an adapter checkpoint holds no base weights"

    loaded = VLMPolicy.from_pretrained(tmp_path / "policy")
    assert loaded.settings == policy.settings
    with torch.no_grad():
        again = loaded.evaluate(out.samples)
    torch.testing.assert_close(again.log_probs, out.log_probs, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(again.values, out.values, atol=1e-6, rtol=1e-6)
    assert any(p.requires_grad for p in loaded.model.parameters())


def test_full_model_policy_saves_and_loads(tiny_model_dir: Callable[[str], Path], tmp_path: Path) -> None:
    policy = make_policy(tiny_model_dir("qwen2_5_vl"), use_lora=False)
    images, prompts, legal = observations(1, seed=6)
    out = policy.act(images, prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=np.random.default_rng(6))
    loaded = VLMPolicy.from_pretrained(policy.save_pretrained(tmp_path / "full"))
    assert not loaded.has_adapter
    with torch.no_grad():
        torch.testing.assert_close(loaded.evaluate(out.samples).log_probs, out.log_probs, atol=1e-5, rtol=1e-6)


def test_act_is_reproducible_from_the_rng(policies: dict[str, VLMPolicy]) -> None:
    policy = policies["qwen2_5_vl"]
    images, prompts, legal = observations(3, seed=7)
    runs = [
        policy.act(images, prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=np.random.default_rng(9))
        for _ in range(2)
    ]
    assert runs[0].texts == runs[1].texts and runs[0].action_indices == runs[1].action_indices
    torch.testing.assert_close(runs[0].log_probs, runs[1].log_probs)
    state = torch.random.get_rng_state()
    policy.act(images, prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=np.random.default_rng(9))
    assert torch.equal(state, torch.random.get_rng_state()), "acting leaves the global torch RNG alone"


def test_penalty_mode_marks_junk_answers(policies: dict[str, VLMPolicy]) -> None:
    policy = policies["llava_next"]
    images, prompts, legal = observations(3, seed=8)
    invalid_policy = InvalidActionPolicy("penalty", fallback=0, penalty=2.0)
    out = policy.act(images, prompts, legal, invalid_policy=invalid_policy, rng=np.random.default_rng(8))
    for parsed, invalid, adjustment, index in zip(
        out.parsed, out.invalid, out.reward_adjustments, out.action_indices, strict=True
    ):
        assert invalid == (parsed.index is None)
        assert adjustment == (-2.0 if invalid else 0.0)
        assert index == (0 if invalid else parsed.index)


def test_bad_inputs_are_rejected(policies: dict[str, VLMPolicy]) -> None:
    policy = policies["qwen2_vl"]
    images, prompts, legal = observations(2)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="one image per prompt"):
        policy.act(images[:1], prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=rng)
    with pytest.raises(ValueError, match="legal-action lists"):
        policy.act(images, prompts, legal[:1], invalid_policy=InvalidActionPolicy("random"), rng=rng)
    with pytest.raises(ValueError, match="at least one legal action"):
        policy.act(images, prompts, [["-"], []], invalid_policy=InvalidActionPolicy("random"), rng=rng)
    with pytest.raises(ValueError, match="temperature"):
        GenerationSettings(temperature=0.0)
    with pytest.raises(ValueError, match="kv_cache"):
        GenerationSettings(kv_cache="paged")
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        VLMPolicy.from_pretrained(Path(__file__).parent)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model_dir: Callable[[str], Path]) -> None:
    path = tiny_model_dir("qwen2_vl")
    plain = make_policy(path, seed=11)
    checkpointed = VLMPolicy.from_model(
        ModelSettings(path, lora_r=8, lora_alpha=16, lora_dropout=0.0, gradient_checkpointing=True),
        GenerationSettings(max_new_tokens=MAX_NEW_TOKENS),
        seed=11,
    )
    for policy in (plain, checkpointed):
        perturb_lora(policy)
    images, prompts, legal = observations(2, seed=12)
    out = plain.act(images, prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=np.random.default_rng(12))
    gradients = []
    for policy in (plain, checkpointed):
        policy.train()
        scores = policy.evaluate(out.samples)
        (scores.log_probs.sum() + scores.values.sum()).backward()
        gradients.append([p.grad.clone() for p in policy.trainable_parameters()])
    assert checkpointed._base_model.is_activation_checkpointing
    for a, b in zip(*gradients, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "llava_next"])
def test_state_values_match_the_values_of_act(arch: str, policies: dict[str, VLMPolicy]) -> None:
    policy = policies[arch]
    images, prompts, legal = observations(3, seed=13)
    out = policy.act(
        images, prompts, legal, invalid_policy=InvalidActionPolicy("random"), rng=np.random.default_rng(13)
    )
    torch.testing.assert_close(policy.state_values(images, prompts), out.values, atol=1e-5, rtol=1e-5)


def test_corrupt_policy_checkpoint_gives_one_clear_error(tiny_model_dir: Callable[[str], Path], tmp_path: Path) -> None:
    policy = make_policy(tiny_model_dir("qwen2_vl"))
    saved = policy.save_pretrained(tmp_path / "policy")
    (saved / "value_head.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match=r"value head checkpoint .* is unreadable"):
        VLMPolicy.from_pretrained(saved)
    (saved / "policy_settings.json").write_text("{not json")
    with pytest.raises(ValueError, match="re-save the policy"):
        VLMPolicy.from_pretrained(saved)
