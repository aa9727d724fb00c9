"""benchmarks/rollout_throughput.py: timing-share accounting and the acting loop, on a tiny real model.

Correctness only: no assertion here depends on how fast the machine is.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.rollout_throughput import (
    STAGES,
    ActingLoop,
    StageTimer,
    ThroughputConfig,
    ThroughputResult,
    batching_summary,
    main,
    parse_args,
    time_shares,
)


def test_time_shares_hand_computed() -> None:
    shares = time_shares({"a": 1.0, "b": 2.5}, 4.0)
    assert shares == pytest.approx({"a": 0.25, "b": 0.625, "other": 0.125})
    with pytest.raises(ValueError, match="positive"):
        time_shares({"a": 1.0}, 0.0)


def test_stage_timer_accumulates_and_rejects_unknown_stages() -> None:
    timer = StageTimer(("x", "y"))
    for _ in range(2):
        with timer.stage("x"):
            time.sleep(0.01)
    assert timer.seconds["x"] >= 0.02 and timer.seconds["y"] == 0.0
    with pytest.raises(KeyError, match="unknown stage"), timer.stage("z"):
        pass


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-envs", "0"], "--num-envs"),
        (["--rounds", "0"], "--rounds"),
        (["--threads", "0"], "--threads must be distinct positive integers"),
        (["--threads", "1", "1"], "--threads must be distinct positive integers"),
        (["--kv-cache", "paged"], "--kv-cache"),
        (["--answers", "short"], "--answers must be distinct values of ['fixed', 'sampled']"),
    ],
)
def test_bad_flags_get_one_clear_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("recompute_scores", [False, True])
def test_acting_round_does_what_a_loop_step_does(recompute_scores: bool, tiny_model_dir: Callable[[str], Path]) -> None:
    """The stage-by-stage round gives the same answers, actions and scores as steps of the one loop
    (AgentLoop with training's ContinuingEpisodes, played by an HFEngine) with the same seeds and rng."""
    from vlm_agent.models.loading import ModelSettings
    from vlm_agent.models.policy import VLMPolicy
    from vlm_agent.models.settings import GenerationSettings
    from vlm_agent.prompting.env_prompts import prompt_for
    from vlm_agent.prompting.invalid_actions import InvalidActionPolicy
    from vlm_agent.rollout.engine import HFEngine
    from vlm_agent.rollout.loop import AgentLoop, ContinuingEpisodes, make_env

    env_id = "gym_cards/NumberLine-v0"
    settings = GenerationSettings(temperature=1.0, max_new_tokens=6)
    model_settings = ModelSettings(str(tiny_model_dir("qwen2_vl")), device="cpu", use_lora=False)
    policy = VLMPolicy.from_model(model_settings, settings)
    loop = ActingLoop(policy, env_id, num_envs=3, seed=5, cot=True, recompute_scores=recompute_scores)
    rng = np.random.default_rng(5)  # one generator for sampling seeds and rescues, as RolloutCollector
    engine = HFEngine(policy, rng, recompute_scores=recompute_scores)
    reference = AgentLoop([make_env(env_id) for _ in range(3)], prompt_for(env_id, cot=True),
                          InvalidActionPolicy("random"), ContinuingEpisodes([5, 6, 7], rng))
    try:
        for _ in range(2):  # the second round acts on the states the first one's steps (and resets) left
            expected = reference.step(engine)
            got = loop.round()
            samples = [step.answer for step in expected]
            assert got.texts == [step.text for step in expected]
            assert got.action_indices == [step.action.index for step in expected]
            assert got.generated_tokens == sum(len(s.completion_ids) for s in samples)
            assert got.decode_steps == max(len(s.completion_ids) for s in samples)
            assert got.log_probs == pytest.approx([s.log_prob for s in samples], abs=1e-5)
            assert got.values == pytest.approx([s.value for s in samples], abs=1e-6)
    finally:
        loop.close()
        reference.close()
    assert all(seconds > 0 for seconds in loop.timer.seconds.values())


def test_tiny_run_shares_cover_the_wall_time(tmp_path: Path, tiny_model_dir: Callable[[str], Path]) -> None:
    threads_before = torch.get_num_threads()
    argv = [
        "--num-envs", "1", "2", "--rounds", "2", "--max-new-tokens", "4", "--temperature", "1.0",
        "--threads", "1", "2", "--answers", "sampled", "fixed", "--model-dir", str(tiny_model_dir("qwen2_vl")), "--out-dir", str(tmp_path),
        "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    assert torch.get_num_threads() == threads_before  # the benchmark restores the thread count
    with open(tmp_path / "rollout_throughput.csv") as handle:
        all_rows = list(csv.DictReader(handle))
    assert [(r["answers"], int(r["threads"]), int(r["num_envs"])) for r in all_rows] == [
        (answers, threads, n) for answers in ("sampled", "fixed") for threads in (1, 2) for n in (1, 2)
    ]
    # Speedups compare with N = 1 in the same setting.
    assert [float(r["speedup_vs_1"]) for r in all_rows[::2]] == [1.0] * 4
    # Fixed answers never end at EOS: every answer, and so every batch, is --max-new-tokens (4) long.
    for row in all_rows[4:]:
        assert float(row["answer_tokens_per_env_step"]) == float(row["decode_steps_per_round"]) == 4.0
    rows = all_rows[:2]
    assert [int(r["env_steps"]) for r in rows] == [2, 4]
    for row in rows:
        shares = {k: float(v) for k, v in row.items() if k.startswith("share_")}
        assert len(shares) == len(STAGES) + 1
        assert sum(shares.values()) == pytest.approx(100.0, abs=0.1)
        # The timed stages cover the round: what they miss ("other") is loop bookkeeping only.
        assert -0.5 <= shares["share_other"] <= 15.0
        assert all(v >= 0 for k, v in shares.items() if k != "share_other")
        assert shares["share_generation"] > 0 and shares["share_scoring"] > 0
        assert float(row["env_steps_per_s"]) > 0 and float(row["cpu_env_steps_per_s"]) > 0
        # A batch runs as long as its longest answer, at most --max-new-tokens (4).
        assert 1 <= float(row["answer_tokens_per_env_step"]) <= float(row["decode_steps_per_round"]) <= 4
    assert float(rows[0]["speedup_vs_1"]) == 1.0 and float(rows[0]["cpu_speedup_vs_1"]) == 1.0
    assert float(rows[1]["speedup_vs_1"]) == pytest.approx(
        float(rows[1]["env_steps_per_s"]) / float(rows[0]["env_steps_per_s"]), abs=0.01
    )
    md = (tmp_path / "rollout_throughput.md").read_text()
    assert md.startswith("| answers | threads | N envs | env steps/s |") and "Machine:" in md
    assert "| sampled | 1 | 2 |" in md and "| fixed | 2 | 1 |" in md
    assert "2 threads: N = 8" not in md  # no N = 8 measured, so no batching sentence about it
    assert (tmp_path / "rollout_throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_round_rates_are_medians_of_rounds() -> None:
    result = ThroughputResult(
        num_envs=4, round_seconds=[1.0, 9.0, 2.0], round_cpu_seconds=[0.5, 0.5, 4.0], generated_tokens=30,
        stage_seconds={"x": 6.0},
    )  # fmt: skip
    assert result.env_steps == 12 and result.seconds == 12.0
    assert result.answer_tokens_per_env_step == 2.5 and result.decode_steps == 0
    assert result.steps_per_second == pytest.approx(4 / 2.0) and result.cpu_steps_per_second == pytest.approx(4 / 0.5)
    assert result.shares == pytest.approx({"x": 0.5, "other": 0.5})


def test_defaults_measure_one_to_sixteen_envs() -> None:
    config = ThroughputConfig()
    assert config.num_envs == [1, 4, 8, 16]
    assert config.kv_cache == "static" and config.threads[0] == 1


def test_batching_summary_compares_n8_with_n1_per_thread_count_and_best_with_best() -> None:
    def result(threads: int, num_envs: int, seconds: float, answers: str = "sampled") -> ThroughputResult:
        return ThroughputResult(num_envs, [seconds], [seconds], 1, {}, threads, answers=answers)

    results = [result(1, 1, 0.2), result(1, 8, 0.4), result(2, 1, 0.25), result(2, 8, 0.32),
               result(1, 1, 0.3, "fixed"), result(1, 8, 0.4, "fixed")]  # fmt: skip
    summary = batching_summary(results)
    assert summary[0] == "Sampled answers, 1 thread: N = 8 acts at 4.0x the env steps/s of N = 1 (4.0x per CPU second)."
    assert summary[1] == "Sampled answers, 2 threads: N = 8 acts at 6.2x the env steps/s of N = 1 (6.2x per CPU second)."
    # N = 1 of the fixed setting (0.3 s) is the baseline of its N = 8, not the faster sampled N = 1.
    assert summary[2] == "Fixed answers, 1 thread: N = 8 acts at 6.0x the env steps/s of N = 1 (6.0x per CPU second)."
    # Best N = 8 (25 steps/s at 2 threads) against the best N = 1 (5 steps/s at 1 thread), same answers.
    assert summary[3].startswith("Best against best, sampled answers:") and summary[3].endswith(": 5.0x.")
    assert "N = 8 at 2 thread(s) 25.00" in summary[3]
    assert summary[4] == "Target: N = 8 at least 5x N = 1."
    assert len(summary) == 5  # one thread count for fixed answers: no best-against-best line


def test_policy_speed_writes_both_act_paths(tmp_path: Path, tiny_model_dir: Callable[[str], Path]) -> None:
    """benchmarks/policy_speed.py times acting (HFEngine.generate) both ways and writes policy_speed.{md,csv} (values not checked)."""
    from benchmarks import policy_speed

    tiny_model_dir("qwen2_vl")  # one thread for torch, as every model test
    argv = ["--batch-sizes", "1", "2", "--new-tokens", "3", "--repeats", "1", "--out-dir", str(tmp_path)]
    assert policy_speed.main(argv) == 0
    with open(tmp_path / "policy_speed.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["arch"], int(r["batch"])) for r in rows] == [("qwen2_vl", 1), ("qwen2_vl", 2)]
    for row in rows:
        assert float(row["act_speedup"]) == pytest.approx(float(row["act_recompute_s"]) / float(row["act_s"]), rel=1e-2)
        assert all(float(row[k]) > 0 for k in ("act_s", "act_cpu_s", "act_recompute_s", "evaluate_backward_s"))
    md = (tmp_path / "policy_speed.md").read_text()
    assert md.startswith("| arch | batch |") and "Machine:" in md and "recompute_scores=True" in md
