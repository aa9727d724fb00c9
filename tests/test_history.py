"""The prompt's memory of earlier steps (`history_steps` K) and the paper's "nothing happens" rule.

The memory is rendered in one place (`PromptTemplate.render` -> `render_history`) and carried by
the one loop (`AgentLoop`), emptied when an episode starts, kept in checkpoints; PPO scores the
token ids that were sampled, never a re-tokenization of their text.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import gym_cards  # noqa: F401  (registers the environments)
from vlm_agent.prompting.env_prompts import prompt_for
from vlm_agent.prompting.invalid_actions import InvalidActionPolicy, resolve_action
from vlm_agent.prompting.parsing import parse_action
from vlm_agent.prompting.templates import INADMISSIBLE_ACTION_TEXT, HistoryEntry, history_action
from vlm_agent.rollout.loop import AgentLoop, HeldOutEpisodes, make_env

ALFWORLD = "gym_cards/ALFWorld-v0"
NUMBER_LINE = "gym_cards/NumberLine-v0"
TASK = "Your task is to: put a pen in drawer."


class Scripted:
    """Answers each step with the next text of a script (the same for every environment)."""

    name = "scripted"
    uses_expert_action = False

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.prompts: list[list[str]] = []

    def respond(self, inputs):
        self.prompts.append([i.prompt for i in inputs])
        answer = self.answers.pop(0)
        return [answer for _ in inputs]

    def usage(self):
        from vlm_agent.rollout.agent import TokenUsage

        return TokenUsage()

    def close(self) -> None:
        pass


# -- rendering ---------------------------------------------------------------------------------


def test_k_zero_renders_the_prompt_of_before() -> None:
    template = prompt_for(ALFWORLD, cot=False)
    history = [HistoryEntry(f"A\n\n{TASK}", "look")]
    assert template.history_steps == 0
    assert template.render(f"B\n\n{TASK}", ["look"], history) == template.render(f"B\n\n{TASK}", ["look"])


def test_the_last_k_steps_open_the_prompt_oldest_first_without_repeating_the_task() -> None:
    template = prompt_for(ALFWORLD, cot=False, history_steps=2)
    history = [HistoryEntry(f"opening\n\n{TASK}", "look"), HistoryEntry(f"second\n\n{TASK}", "go to desk 1"),
               HistoryEntry(f"You arrive at desk 1.\n\n{TASK}", "take pen 1 from desk 1")]
    prompt = template.render(f"You pick up the pen 1.\n\n{TASK}", ["look", "inventory"], history)
    memory, rest = prompt.split("You are an expert", 1)
    assert memory == ("Your last 2 steps, oldest first:\n"
                      "1. Observation: second Action: go to desk 1\n"
                      "2. Observation: You arrive at desk 1. Action: take pen 1 from desk 1\n")
    assert rest.count(TASK) == 1 and "opening" not in prompt


def test_image_only_prompts_recall_actions_but_never_the_state_text() -> None:
    template = prompt_for(NUMBER_LINE, cot=True, history_steps=3)
    prompt = template.render("Current: 4, Target: 1", ["-", "+"], [HistoryEntry("Current: 5, Target: 1", "-")])
    assert prompt.startswith("Your last 1 action, oldest first: '-'.\n")
    assert "Current" not in prompt
    shown = prompt_for(NUMBER_LINE, cot=True, show_state=True, history_steps=3)
    assert "Observation: Current: 5, Target: 1 Action: -" in shown.render("Current: 4, Target: 1", ["-", "+"],
                                                                          [HistoryEntry("Current: 5, Target: 1", "-")])


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_history_steps_must_be_a_non_negative_integer(bad) -> None:
    with pytest.raises(ValueError, match="history_steps must be an integer >= 0"):
        prompt_for(NUMBER_LINE, history_steps=bad)


# -- the "nothing happens" rule ----------------------------------------------------------------


def test_nothing_rule_plays_an_inadmissible_action() -> None:
    legal = ["look", "inventory"]
    parsed = parse_action('{"action": "go to 1"}', legal)
    resolved = resolve_action(parsed, legal, InvalidActionPolicy("nothing"), np.random.default_rng(0))
    assert resolved == (2, True, 0.0)
    assert history_action(legal, resolved.index) == INADMISSIBLE_ACTION_TEXT
    assert history_action(legal, 1) == "inventory"


def test_nothing_rule_on_alfworld_changes_nothing_costs_one_and_is_remembered() -> None:
    env = make_env(ALFWORLD, {"task_types": ["pick"], "image_size": 64})
    loop = AgentLoop([env], prompt_for(ALFWORLD, cot=False, history_steps=2), InvalidActionPolicy("nothing"),
                     HeldOutEpisodes(1, seed=0))
    try:
        before = env.unwrapped.describe()
        (step,) = loop.step(Scripted(['{"action": "go to 1"}']))
        assert step.action.invalid and step.reward == -1.0 and step.info["admissible"] is False
        assert "Nothing happens." in env.unwrapped.describe()
        assert loop.history(0) == [HistoryEntry(before, INADMISSIBLE_ACTION_TEXT)]
        (view,) = loop.observe()
        assert f"Action: {INADMISSIBLE_ACTION_TEXT}" in view.prompt
    finally:
        loop.close()


def test_nothing_rule_is_refused_for_an_env_without_inadmissible_commands() -> None:
    with pytest.raises(ValueError, match="invalid_action 'nothing'.*NumberLine-v0 does not"):
        AgentLoop([make_env(NUMBER_LINE)], prompt_for(NUMBER_LINE), InvalidActionPolicy("nothing"),
                  HeldOutEpisodes(1, seed=0))


# -- the loop carries the memory ---------------------------------------------------------------


def test_the_loop_remembers_k_steps_and_forgets_them_when_an_episode_ends() -> None:
    # NumberLine with max_position 1: every episode ends within 2 steps.
    env = make_env(NUMBER_LINE, {"max_position": 1})
    loop = AgentLoop([env], prompt_for(NUMBER_LINE, cot=False, show_state=True, history_steps=1),
                     InvalidActionPolicy("random"), HeldOutEpisodes(3, seed=0))
    agent = Scripted(['{"action": "+"}', '{"action": "-"}'] * 4)
    try:
        assert loop.history(0) == [] and not agent.prompts
        state = env.unwrapped.describe()
        (step,) = loop.step(agent)
        if step.done:
            assert loop.history(0) == []  # a new episode starts with an empty memory
        else:
            assert loop.history(0) == [HistoryEntry(state, "+")]
            state = env.unwrapped.describe()
            (step,) = loop.step(agent)
            assert step.agent_input.prompt.startswith(f"Your last 1 step, oldest first:\n1. Observation: ")
            assert loop.history(0) == [] if step.done else loop.history(0) == [HistoryEntry(state, "-")]
        while not step.done:
            (step,) = loop.step(agent)
        assert loop.history(0) == [] and "Your last" not in loop.observe()[0].prompt
    finally:
        loop.close()


# -- PPO scores the sampled ids; checkpoints keep the memory ------------------------------------


torch = pytest.importorskip("torch")


def _collector(tiny_model_dir, history_steps: int, seed: int = 0):
    from vlm_agent.models.policy import VLMPolicy
    from vlm_agent.models.settings import GenerationSettings
    from vlm_agent.rollout.collector import RolloutCollector
    from vlm_agent.rollout.engine import HFEngine

    policy = VLMPolicy.from_model(str(tiny_model_dir("qwen2_vl")), GenerationSettings(max_new_tokens=12, temperature=1.0))
    engine = HFEngine(policy, np.random.default_rng(seed))
    template = prompt_for(NUMBER_LINE, cot=False, show_state=True, history_steps=history_steps)
    return RolloutCollector(NUMBER_LINE, num_envs=2, seed=seed, engine=engine, prompt_template=template,
                            invalid_policy=InvalidActionPolicy("random"), env_kwargs={"max_position": 6})


def test_ppo_scores_the_sampled_token_ids_with_history_on(tiny_model_dir) -> None:
    collector = _collector(tiny_model_dir, history_steps=2)
    policy = collector.engine.policy
    tokenizer = policy.processor.tokenizer
    generated: list[torch.Tensor] = []
    generate = policy.model.generate

    def recording_generate(*args, **kwargs):
        output = generate(*args, **kwargs)
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        generated.extend(sequences.clone())
        return output

    policy.model.generate = recording_generate
    try:
        rollout, _ = collector.collect(4)
    finally:
        policy.model.generate = generate
        collector.close()
    samples = rollout.flat_samples()
    assert len(generated) == len(samples) == 8
    eos = set(tokenizer.all_special_ids)
    retokenized_differs = 0
    for sample, sequence in zip(samples, generated):
        row = sequence.tolist()
        while row and row[0] == tokenizer.pad_token_id:  # the batch's left padding
            row.pop(0)
        prompt, ids = sample.prompt_ids.tolist(), sample.completion_ids.tolist()
        assert row[: len(prompt)] == prompt
        # The stored completion is exactly what generate produced after the prompt, up to its first EOS.
        produced = row[len(prompt):]
        assert ids == produced[: len(ids)] and (len(ids) == len(produced) or ids[-1] in eos)
        retokenized = tokenizer(sample.text, add_special_tokens=False)["input_ids"]
        retokenized_differs += retokenized != [i for i in ids if i not in eos]
    # Decoding and re-tokenizing these answers gives other ids: scoring text instead of ids would differ.
    assert retokenized_differs > 0
    # Later prompts carry the memory, and the prompt ids stored are the tokenized prompt of that step.
    assert any("Your last 2 steps" in tokenizer.decode(s.prompt_ids.tolist()) for s in samples)
    with torch.no_grad():
        scored = policy.evaluate(samples).log_probs
    assert torch.allclose(scored.double(), rollout.log_probs.reshape(-1), atol=1e-4)


def test_a_checkpointed_collector_resumes_with_the_same_memory(tiny_model_dir) -> None:
    first = _collector(tiny_model_dir, history_steps=3)
    try:
        first.collect(2)
        state = json.loads(json.dumps(first.state_dict()))  # checkpoints hold it as JSON
        prompts = [view.prompt for view in first.loop.observe()]
        memories = [first.loop.history(i) for i in range(2)]
    finally:
        first.close()
    assert any(memories) and all(len(memory) <= 3 for memory in memories)
    second = _collector(tiny_model_dir, history_steps=3)
    try:
        second.load_state_dict(state)
        assert [second.loop.history(i) for i in range(2)] == memories
        assert [view.prompt for view in second.loop.observe()] == prompts
    finally:
        second.close()


# -- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--invalid_action", "nothing"], "invalid_action 'nothing' (nothing happens, reward -1) needs"),
        (["train", "--history_steps", "-1"], "history_steps=-1 must not be negative"),
        (["eval", "--methods", "random", "--env_ids", NUMBER_LINE, "--invalid_action", "nothing", "--episodes", "1"],
         "invalid_action 'nothing' (nothing happens, reward -1) needs"),
        (["eval", "--methods", "random", "--env_ids", NUMBER_LINE, "--history_steps", "-2"],
         "history_steps=-2 must not be negative"),
    ],
)
def test_bad_history_and_rule_options_are_one_line_and_write_nothing(argv, message, tmp_path, monkeypatch, capsys) -> None:
    from vlm_agent.cli.main import main

    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"vlm-agent {argv[0]}: error: ") and message in lines[0], err
    assert not list(tmp_path.iterdir())
