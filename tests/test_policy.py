"""VLMPolicy (vlm_agent.models.policy) and its rollout engine HFEngine (vlm_agent.rollout.engine) on
real tiny models of each architecture: sampling and scoring, re-scoring, gradients, saving; and the
engine's answers read by the one loop's parser and invalid-answer rule (vlm_agent.rollout.loop)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import StaticCache

from vlm_agent.models.batching import PolicySample
from vlm_agent.models.loading import ModelSettings
from vlm_agent.models.policy import VLMPolicy
from vlm_agent.models.sampler import draw_from_probabilities
from vlm_agent.models.settings import GenerationSettings
from vlm_agent.prompting.env_prompts import prompt_for
from vlm_agent.prompting.invalid_actions import InvalidActionPolicy, resolve_action
from vlm_agent.prompting.parsing import parse_action
from vlm_agent.rollout.agent import AgentInput
from vlm_agent.rollout.engine import HFEngine
from vlm_agent.rollout.loop import AgentLoop, ContinuingEpisodes, Step, make_env
from vlm_agent.training.ppo_config import TINY_ARCHITECTURES

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


def engine_for(policy: VLMPolicy, seed: int, *, recompute_scores: bool = False) -> HFEngine:
    """An engine drawing its sampling seeds from a fresh ``default_rng(seed)``."""
    return HFEngine(policy, np.random.default_rng(seed), recompute_scores=recompute_scores)


def stored_scores(samples: list[PolicySample]) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probs ``[N]`` and values ``[N]`` the engine stored in its samples."""
    return torch.tensor([s.log_prob for s in samples]), torch.tensor([s.value for s in samples])


def play_one_step(engine: HFEngine, env_id: str, seeds: list[int], invalid_policy: InvalidActionPolicy) -> list[Step]:
    """One step of the one loop in ``len(seeds)`` fresh ``env_id`` environments, played by ``engine``.

    The loop resolves unusable answers with the engine's own generator, as the rollout collector does.
    """
    loop = AgentLoop(
        envs=[make_env(env_id) for _ in seeds], prompt_template=prompt_for(env_id), invalid_policy=invalid_policy,
        schedule=ContinuingEpisodes(seeds, engine.rng),
    )  # fmt: skip
    try:
        return loop.step(engine)
    finally:
        loop.close()


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
def test_engine_answers_resolve_to_legal_actions_with_finite_scores(
    arch: str, batch: int, policies: dict[str, VLMPolicy]
) -> None:
    policy = policies[arch]
    images, prompts, legal = observations(batch)
    rng = np.random.default_rng(0)
    samples = HFEngine(policy, rng).generate(images, prompts, legal)

    assert len(samples) == batch
    log_probs, values = stored_scores(samples)
    assert torch.isfinite(log_probs).all() and torch.isfinite(values).all()
    assert (log_probs < 0).all()
    for sample, actions in zip(samples, legal, strict=True):
        assert 1 <= len(sample.completion_ids) <= MAX_NEW_TOKENS
        assert not sample.completion_ids.is_inference() and sample.completion_ids.device.type == "cpu"
        # The answer's text is its decoded token ids, what the loop parses.
        text = policy.processor.tokenizer.decode(sample.completion_ids.tolist(), skip_special_tokens=True)
        assert sample.text == text
        parsed = parse_action(sample.text, actions)
        index, invalid, adjustment = resolve_action(parsed, actions, InvalidActionPolicy("random"), rng)
        assert 0 <= index < len(actions)
        assert invalid == (not parsed.valid) and adjustment == 0.0
        # The masks split where the parser found the action (none found: all action, no CoT).
        assert bool(sample.action_mask.all()) or parsed.valid
        assert bool(sample.thought_mask.any()) <= parsed.valid
        assert not (sample.thought_mask & sample.action_mask).any() and not sample.thought_mask[0]
        eos_positions = torch.isin(sample.completion_ids, torch.tensor(policy.eos_token_ids)).nonzero()
        assert len(eos_positions) == 0 or int(eos_positions[0]) == len(sample.completion_ids) - 1
        assert not torch.isin(sample.completion_ids, torch.tensor(policy.suppressed_token_ids)).any()


def test_sampling_needs_one_legal_action_list_per_prompt(policies: dict[str, VLMPolicy]) -> None:
    policy = policies["qwen2_vl"]
    images, prompts, legal = observations(2)
    inputs = policy.prepare_inputs(images, prompts)
    with torch.no_grad(), pytest.raises(ValueError, match="2 prompts but 1 legal-action lists"):
        engine_for(policy, 0).sample(inputs, seed=0, legal_actions=legal[:1])


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_recomputed_log_probs_match_generation_scores(arch: str, policies: dict[str, VLMPolicy]) -> None:
    policy = policies[arch]
    images, prompts, legal = observations(3, seed=1)
    inputs = policy.prepare_inputs(images, prompts)
    policy.eval()
    with torch.no_grad():
        samples, generation_log_probs = engine_for(policy, 0).sample(
            inputs, seed=5, legal_actions=legal, output_scores=True
        )
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
def test_engine_scores_from_generation_equal_a_second_forward(arch: str, policies: dict[str, VLMPolicy]) -> None:
    """generate() takes log-probs and values from generation itself; recompute_scores=True re-scores with evaluate()."""
    policy = policies[arch]
    images, prompts, legal = observations(3, seed=14)
    runs = [
        engine_for(policy, 14, recompute_scores=recompute).generate(images, prompts, legal)
        for recompute in (False, True)
    ]  # fmt: skip
    assert [s.text for s in runs[0]] == [s.text for s in runs[1]]
    scores = [stored_scores(samples) for samples in runs]
    torch.testing.assert_close(scores[0][0], scores[1][0], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(scores[0][1], scores[1][1], atol=1e-5, rtol=1e-5)
    # generate() is sample_scored + score_samples with one seed drawn from the rng; score_samples
    # returns what it stores in the samples.
    seed = int(np.random.default_rng(14).integers(0, 2**31 - 1))
    inputs = policy.prepare_inputs(images, prompts)
    engine = engine_for(policy, 0)
    policy.eval()
    with torch.no_grad():
        samples, generation_scores = engine.sample_scored(inputs, seed=seed, legal_actions=legal)
        log_probs, values = engine.score_samples(samples, generation_scores)
    assert [s.text for s in samples] == [s.text for s in runs[0]]
    torch.testing.assert_close(log_probs, scores[0][0])
    torch.testing.assert_close(values, scores[0][1])
    for sample, log_prob, value in zip(samples, log_probs, values, strict=True):
        assert sample.log_prob == pytest.approx(log_prob.item()) and sample.value == pytest.approx(value.item())


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_static_and_dynamic_key_value_caches_give_the_same_answers(
    arch: str, policies: dict[str, VLMPolicy], monkeypatch: pytest.MonkeyPatch
) -> None:
    """kv_cache only changes how the cache is stored: same answers, log-probs and values, batch with left padding.

    The static path really preallocates: generation writes into the StaticCache the engine made,
    sized for prompt + max_new_tokens; the dynamic path leaves the cache to Hugging Face.
    """
    policy = policies[arch]
    images, prompts, legal = observations(3, seed=16)
    runs, caches = {}, []
    prompt_length = policy.prepare_inputs(images, prompts)["input_ids"].shape[1]
    try:
        for kv_cache in ("dynamic", "static"):
            caches.clear()
            policy.settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, kv_cache=kv_cache)
            engine = engine_for(policy, 16)
            make_kv_cache = engine.make_kv_cache

            def recording_make_kv_cache(max_length: int, make_kv_cache=make_kv_cache) -> StaticCache | None:
                cache = make_kv_cache(max_length)
                caches.append((max_length, cache))
                return cache

            monkeypatch.setattr(engine, "make_kv_cache", recording_make_kv_cache)
            runs[kv_cache] = engine.generate(images, prompts, legal)
            assert [length for length, _ in caches] == [prompt_length + MAX_NEW_TOKENS]
            cache = caches[0][1]
            if kv_cache == "dynamic":
                assert cache is None
            else:
                assert isinstance(cache, StaticCache) and cache.get_max_length() == prompt_length + MAX_NEW_TOKENS
                answer_length = max(len(sample.completion_ids) for sample in runs[kv_cache])
                # Every prompt token and every generated token but the last went through the cache.
                assert cache.get_seq_length() == prompt_length + answer_length - 1
    finally:
        policy.settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS)
    assert [s.text for s in runs["static"]] == [s.text for s in runs["dynamic"]]
    static_log_probs, static_values = stored_scores(runs["static"])
    dynamic_log_probs, dynamic_values = stored_scores(runs["dynamic"])
    torch.testing.assert_close(static_log_probs, dynamic_log_probs, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(static_values, dynamic_values, atol=1e-5, rtol=1e-5)


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
        engine_for(policy, 15, recompute_scores=recompute).generate(images, prompts, legal)
        for recompute in (False, True)
    ]  # fmt: skip
    lengths = [len(sample.completion_ids) for sample in runs[0]]
    assert max(lengths) < MAX_NEW_TOKENS and len(set(lengths)) > 1
    for sample in runs[0]:
        assert int(sample.completion_ids[-1]) in policy.eos_token_ids
    torch.testing.assert_close(stored_scores(runs[0])[0], stored_scores(runs[1])[0], atol=1e-4, rtol=1e-5)


def test_model_generation_config_cannot_change_the_sampling_distribution(policies: dict[str, VLMPolicy]) -> None:
    """A model's own generation_config (real Qwen2-VL: repetition_penalty=1.05, top_k=1) fills what the
    engine leaves unset; the engine must neutralise it, or the scores would not be those of its samples."""
    policy = policies["qwen2_vl"]
    engine = engine_for(policy, 0)
    config = policy._base_model.generation_config
    saved = config.to_dict()
    images, prompts, legal = observations(2, seed=16)
    inputs = policy.prepare_inputs(images, prompts)
    try:
        config.repetition_penalty, config.no_repeat_ngram_size, config.top_k, config.temperature = 3.0, 1, 3, 0.05
        with torch.no_grad():
            samples, generation_log_probs = engine.sample(inputs, seed=3, legal_actions=legal, output_scores=True)
            recomputed = policy.evaluate(samples)
        assert generation_log_probs is not None
        width = recomputed.token_log_probs.shape[1]
        torch.testing.assert_close(recomputed.token_log_probs, generation_log_probs[:, :width], atol=1e-5, rtol=1e-5)
        config.bad_words_ids = [[5]]
        with pytest.raises(ValueError, match=r"generation_config sets \['bad_words_ids'\]"):
            engine.sample(inputs, seed=3, legal_actions=legal)
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
    """evaluate's log-prob is 0.5 * sum(CoT) + sum(action) over masks written out by hand."""
    policy = policies["qwen2_vl"]
    images, prompts, legal = observations(3, seed=2)
    samples = engine_for(policy, 2).generate(images, prompts, legal)
    # A hand-made answer, tokenized in two pieces so that the action part (from the key's opening
    # quote) starts exactly at the first token of the second piece.
    tokenizer = policy.processor.tokenizer
    thought_ids = tokenizer('{"thoughts": "go up", ', add_special_tokens=False)["input_ids"]
    action_ids = tokenizer('"action": "+"}', add_special_tokens=False)["input_ids"] + [policy.eos_token_ids[0]]
    answer_ids = thought_ids + action_ids
    cot, length = range(1, len(thought_ids)), len(answer_ids)  # the first token is in neither sum
    thought = torch.tensor([i in cot for i in range(length)])
    action = torch.tensor([i >= len(thought_ids) for i in range(length)])
    # The policy's own masks for this answer are the hand-written ones.
    from vlm_agent.algorithms.cot_log_prob import thought_action_masks

    policy_thought, policy_action = thought_action_masks(tokenizer, answer_ids, ["-", "+"])
    assert policy_thought.tolist() == thought.tolist() and policy_action.tolist() == action.tolist()
    sample = samples[0]
    crafted = PolicySample(
        sample.prompt_ids, sample.prompt_token_inputs, sample.image_inputs,
        torch.tensor(answer_ids), thought, action, 0.0, 0.0,
    )  # fmt: skip
    with torch.no_grad():
        scores = policy.evaluate([crafted])
    tokens = scores.token_log_probs[0].tolist()
    expected = 0.5 * sum(tokens[i] for i in cot) + sum(tokens[len(thought_ids) : length])
    assert scores.log_probs[0].item() == pytest.approx(expected, rel=1e-6)
    assert scores.log_probs[0].item() != pytest.approx(sum(tokens[:length]))


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_evaluate_gives_gradients_to_lora_and_value_head(arch: str, policies: dict[str, VLMPolicy]) -> None:
    policy = policies[arch]
    images, prompts, legal = observations(2, seed=3)
    samples = engine_for(policy, 3).generate(images, prompts, legal)
    policy.train()
    for parameter in policy.trainable_parameters():
        parameter.grad = None
    scores = policy.evaluate(samples)
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
    torch.testing.assert_close(scores.log_probs.detach(), stored_scores(samples)[0], atol=1e-4, rtol=1e-5)


def test_reference_log_probs_come_from_the_base_model(tiny_model_dir: Callable[[str], Path]) -> None:
    path = tiny_model_dir("llava_next")
    policy = make_policy(path)
    perturb_lora(policy)
    base = make_policy(path, use_lora=False)
    images, prompts, legal = observations(2, seed=4)
    samples = engine_for(policy, 4).generate(images, prompts, legal)
    with torch.no_grad():
        with_reference = policy.evaluate(samples, with_reference=True)
        base_scores = base.evaluate(samples)
    assert with_reference.ref_log_probs is not None
    torch.testing.assert_close(with_reference.ref_log_probs, base_scores.log_probs, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(with_reference.log_probs, with_reference.ref_log_probs, atol=1e-3)
    with pytest.raises(ValueError, match="need LoRA .the adapter disabled is the reference. or keep_reference"):
        base.evaluate(samples, with_reference=True)


@pytest.mark.parametrize("arch", ["qwen2_vl", "llava_next"])
def test_save_and_load_reproduce_scores(arch: str, tiny_model_dir: Callable[[str], Path], tmp_path: Path) -> None:
    policy = make_policy(tiny_model_dir(arch))
    perturb_lora(policy)
    images, prompts, legal = observations(3, seed=5)
    samples = engine_for(policy, 5).generate(images, prompts, legal)
    log_probs, values = stored_scores(samples)
    policy.save_pretrained(tmp_path / "policy")
    assert (tmp_path / "policy" / "adapter_config.json").is_file()
    assert not (tmp_path / "policy" / "model.safetensors").exists(), "an adapter checkpoint holds no base weights"

    loaded = VLMPolicy.from_pretrained(tmp_path / "policy")
    assert loaded.settings == policy.settings
    with torch.no_grad():
        again = loaded.evaluate(samples)
    torch.testing.assert_close(again.log_probs, log_probs, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(again.values, values, atol=1e-6, rtol=1e-6)
    assert any(p.requires_grad for p in loaded.model.parameters())


def test_full_model_policy_saves_and_loads(tiny_model_dir: Callable[[str], Path], tmp_path: Path) -> None:
    policy = make_policy(tiny_model_dir("qwen2_5_vl"), use_lora=False)
    images, prompts, legal = observations(1, seed=6)
    samples = engine_for(policy, 6).generate(images, prompts, legal)
    loaded = VLMPolicy.from_pretrained(policy.save_pretrained(tmp_path / "full"))
    assert not loaded.has_adapter
    with torch.no_grad():
        torch.testing.assert_close(loaded.evaluate(samples).log_probs, stored_scores(samples)[0], atol=1e-5, rtol=1e-6)


def test_engine_is_reproducible_from_the_rng(policies: dict[str, VLMPolicy]) -> None:
    policy = policies["qwen2_5_vl"]
    images, prompts, legal = observations(3, seed=7)
    runs = [engine_for(policy, 9).generate(images, prompts, legal) for _ in range(2)]
    assert [s.text for s in runs[0]] == [s.text for s in runs[1]]
    for first, second in zip(*runs, strict=True):
        assert torch.equal(first.completion_ids, second.completion_ids)
    torch.testing.assert_close(stored_scores(runs[0]), stored_scores(runs[1]))
    # As an agent, the engine answers the same inputs the same way.
    inputs = [AgentInput(image, prompt, actions, None) for image, prompt, actions in zip(images, prompts, legal)]
    responded = engine_for(policy, 9).respond(inputs)
    assert [s.text for s in responded] == [s.text for s in runs[0]]
    torch.testing.assert_close(stored_scores(responded), stored_scores(runs[0]))
    # Played through the loop, the executed actions (random ones for unusable answers, drawn from the
    # generator the engine shares with the loop) are reproducible too.
    plays = [
        play_one_step(engine_for(policy, 9), "gym_cards/EZPoints-v0", [7, 8, 9], InvalidActionPolicy("random"))
        for _ in range(2)
    ]
    assert [step.text for step in plays[0]] == [step.text for step in plays[1]]
    assert [step.action for step in plays[0]] == [step.action for step in plays[1]]
    assert [step.answer.log_prob for step in plays[0]] == [step.answer.log_prob for step in plays[1]]
    state = torch.random.get_rng_state()
    engine_for(policy, 9).generate(images, prompts, legal)
    assert torch.equal(state, torch.random.get_rng_state()), "sampling leaves the global torch RNG alone"


def test_penalty_mode_marks_junk_answers(policies: dict[str, VLMPolicy]) -> None:
    """One loop step per task, played by the engine: junk answers execute the fallback and lose the penalty."""
    policy = policies["llava_next"]
    invalid_policy = InvalidActionPolicy("penalty", fallback=0, penalty=2.0)
    steps = []
    for env_id, _ in TASKS:
        (step,) = play_one_step(engine_for(policy, 8), env_id, [8], invalid_policy)
        steps.append(step)
        assert step.text == step.answer.text
        assert step.parsed == parse_action(step.text, step.agent_input.legal_actions)
        assert step.action.invalid == (step.parsed.index is None)
        assert step.action.reward_adjustment == (-2.0 if step.action.invalid else 0.0)
        assert step.action.index == (0 if step.action.invalid else step.parsed.index)
        # The adjustment is added to the environment's reward for the executed action.
        env = make_env(env_id)
        env.reset(seed=8)
        _, reward, _, _, _ = env.step(step.action.index)
        env.close()
        assert step.reward == float(reward) + step.action.reward_adjustment
    assert any(step.action.invalid for step in steps), "the untrained model gives at least one junk answer"


def test_bad_inputs_are_rejected(policies: dict[str, VLMPolicy]) -> None:
    policy = policies["qwen2_vl"]
    images, prompts, legal = observations(2)
    engine = engine_for(policy, 0)
    with pytest.raises(ValueError, match="one image per prompt"):
        engine.generate(images[:1], prompts, legal)
    with pytest.raises(ValueError, match="legal-action lists"):
        engine.generate(images, prompts, legal[:1])
    with pytest.raises(ValueError, match="at least one legal action"):
        engine.generate(images, prompts, [["-"], []])
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
    samples = engine_for(plain, 12).generate(images, prompts, legal)
    gradients = []
    for policy in (plain, checkpointed):
        policy.train()
        scores = policy.evaluate(samples)
        (scores.log_probs.sum() + scores.values.sum()).backward()
        gradients.append([p.grad.clone() for p in policy.trainable_parameters()])
    assert checkpointed._base_model.is_activation_checkpointing
    for a, b in zip(*gradients, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "llava_next"])
def test_state_values_match_the_values_the_engine_stored(arch: str, policies: dict[str, VLMPolicy]) -> None:
    policy = policies[arch]
    images, prompts, legal = observations(3, seed=13)
    samples = engine_for(policy, 13).generate(images, prompts, legal)
    torch.testing.assert_close(policy.state_values(images, prompts), stored_scores(samples)[1], atol=1e-5, rtol=1e-5)


def test_corrupt_policy_checkpoint_gives_one_clear_error(tiny_model_dir: Callable[[str], Path], tmp_path: Path) -> None:
    policy = make_policy(tiny_model_dir("qwen2_vl"))
    saved = policy.save_pretrained(tmp_path / "policy")
    (saved / "value_head.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match=r"value head checkpoint .* is unreadable"):
        VLMPolicy.from_pretrained(saved)
    (saved / "policy_settings.json").write_text("{not json")
    with pytest.raises(ValueError, match="re-save the policy"):
        VLMPolicy.from_pretrained(saved)
