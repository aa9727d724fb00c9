"""Rollout throughput: environment steps per second of acting with a tiny VLM, N = 1, 4, 8, 16.

One acting round steps N environments together: build N prompts, preprocess N (image, prompt)
pairs, generate N answers in one batched ``generate``, score them (the log-probs and values PPO
stores), parse them to actions, and step the N environments (which renders the next frames). The
round does what one step of the one loop does when training collects rollouts
(:meth:`vlm_agent.rollout.loop.AgentLoop.step` with :class:`~vlm_agent.rollout.loop.ContinuingEpisodes`,
played by :class:`vlm_agent.rollout.engine.HFEngine`), stage by stage through the engine's and
the policy's public methods, so that each stage can be timed on its own:

* prompt building: ``describe()`` + ``legal_actions()`` of every env and ``PromptTemplate.render``;
* preprocessing: ``VLMPolicy.prepare_inputs`` (chat template, tokenizer, image processor);
* generation: ``HFEngine.sample_scored`` (one batched ``generate`` that also records each sampled
  token's log-prob and the prompt's last hidden state on the way, and decodes each answer's text);
* scoring: ``HFEngine.score_samples`` (CoT-scaled log-probs + value head, from what generation
  recorded); with ``--recompute-scores``, ``HFEngine.sample`` then ``VLMPolicy.evaluate`` (a second
  forward over prompt + answer, the slower path ``HFEngine(..., recompute_scores=True)`` takes);
* parsing: ``parse_action`` + ``resolve_action`` (the invalid-answer rule);
* env step + rendering: every env's ``step`` (which draws the next frame) and the resets of the
  episodes that ended.

The rounds of all N are interleaved (round 1 of every N, then round 2, ...) so that load from
other processes on a shared machine hits every N alike; env steps/s is N over the median round
time, wall and process CPU. The share of each stage is its time over the wall time of the measured
rounds; what no stage covers (the loop itself) is reported as "other". The model is a tiny random-weight VLM built
offline (``vlm_agent.demo.tiny_models.make_tiny_model``), all weights trainable as in the CPU demo
config (``--lora`` adds the paper's r=128 adapters). Its answers are junk, so most are resolved by
the random fallback. With ``--answers fixed`` EOS is suppressed, so every answer runs to
``--max-new-tokens`` and every N does the same work per env step (what vLLM's throughput
benchmarks do with ``ignore_eos``): this isolates what batching buys. With ``sampled`` answers
some end early at a sampled EOS, as they would in training; a batch runs until its longest answer
ends, so "decode steps per round" (forward passes per batched generation) exceeds "answer tokens
per env step" once N > 1: rows that ended early are still carried along. Both are measured by
default, each at one torch thread (the trainer's default) and at all cores.

Writes ``benchmarks/results/rollout_throughput.{md,csv,png}``.

Usage (from the repository root)::

    python -m benchmarks.rollout_throughput
    python -m benchmarks.rollout_throughput --num-envs 1 8 --rounds 4 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.make_readme import RESULTS_DIR, available_cores, machine_description
from vlm_agent.training.ppo_config import KV_CACHES

if TYPE_CHECKING:  # torch and transformers load only once a benchmark runs
    from vlm_agent.models.policy import VLMPolicy

RESULT_NAME = "rollout_throughput"
STAGES = (
    "prompt building",
    "preprocessing",
    "generation",
    "scoring",
    "parsing",
    "env step + rendering",
)
"""The timed stages of one acting round, in the order they run."""
ANSWER_LENGTHS = ("fixed", "sampled")
"""``--answers`` values: EOS suppressed (every answer max_new_tokens long) or sampled like any token."""


class StageTimer:
    """Accumulates wall time per named stage (``time.perf_counter``)."""

    def __init__(self, stages: tuple[str, ...] = STAGES) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(stages, 0.0)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the time spent inside the ``with`` block to stage ``name``."""
        if name not in self.seconds:
            raise KeyError(f"unknown stage {name!r}; stages are {list(self.seconds)}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


def time_shares(stage_seconds: dict[str, float], total_seconds: float) -> dict[str, float]:
    """Fraction of ``total_seconds`` spent in each stage, plus ``"other"`` for the rest.

    ``share[s] = stage_seconds[s] / total_seconds`` and ``other = 1 - sum(share)``, so the shares
    sum to 1 by construction; ``other`` is what the stages did not cover (it is negative only if
    the stages were timed overlapping, which would be a bug).
    """
    if total_seconds <= 0:
        raise ValueError(f"total_seconds must be positive, got {total_seconds}")
    shares = {name: seconds / total_seconds for name, seconds in stage_seconds.items()}
    shares["other"] = 1.0 - sum(shares.values())
    return shares


@dataclass
class ThroughputConfig:
    """Arguments of the rollout benchmark; each field's ``help`` becomes its ``--help`` line."""

    env: str = field(default="NumberLine", metadata={"help": "card game to act in (gym_cards/<env>-v0)"})
    num_envs: list[int] = field(
        default_factory=lambda: [1, 4, 8, 16],
        metadata={"help": "numbers of parallel environments acting in one batched generation"},
    )
    rounds: int = field(
        default=16, metadata={"help": "timed acting rounds per N (after one warm-up round); env steps = rounds * N"}
    )
    arch: str = field(default="qwen2_vl", metadata={"help": "tiny architecture (qwen2_vl, qwen2_5_vl, llava_next)"})
    lora: bool = field(
        default=False,
        metadata={"help": "act through LoRA adapters (paper: r=128); the CPU demo config trains all weights"},
    )
    max_new_tokens: int = field(
        default=64,
        metadata={
            "help": "longest answer in tokens; a random model nearly always runs to it (CPU demo: 64, paper: 256)"
        },
    )
    temperature: float = field(default=0.2, metadata={"help": "sampling temperature (paper: 0.2)"})
    cot: bool = field(default=True, metadata={"help": "chain-of-thought prompt (the paper's main setting)"})
    recompute_scores: bool = field(
        default=False,
        metadata={"help": "score answers with a second forward (evaluate) instead of from generation's own scores"},
    )
    kv_cache: str = field(
        default="static", metadata={"help": "key/value cache while generating: static or dynamic (policy default: static)"}
    )
    answers: list[str] = field(
        default_factory=lambda: list(ANSWER_LENGTHS),
        metadata={
            "help": "answer lengths to measure: 'fixed' suppresses EOS so every answer runs to --max-new-tokens "
            "(the same work per env step for every N, like vLLM's throughput benchmarks' ignore_eos), 'sampled' "
            "ends each answer where the model samples EOS (a batch then waits for its longest answer)"
        },
    )
    threads: list[int] = field(
        default_factory=lambda: sorted({1, available_cores()}),
        metadata={
            "help": "torch thread counts to measure, each with every N (default: 1, the trainer's default, and "
            "all the cores this process may use)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the tiny model, the environments and sampling"})
    model_dir: Path | None = field(
        default=None, metadata={"help": "an existing model directory to use instead of building a tiny one"}
    )
    out_dir: Path = field(default=RESULTS_DIR, metadata={"help": "directory for the result files"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        if not self.num_envs or any(n < 1 for n in self.num_envs):
            raise ValueError(f"--num-envs must be positive integers, got {self.num_envs}")
        if self.rounds < 1:
            raise ValueError(f"--rounds must be >= 1, got {self.rounds}")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")
        if self.kv_cache not in KV_CACHES:
            raise ValueError(f"--kv-cache must be one of {list(KV_CACHES)}, got {self.kv_cache!r}")
        if not self.answers or set(self.answers) - set(ANSWER_LENGTHS) or len(set(self.answers)) != len(self.answers):
            raise ValueError(f"--answers must be distinct values of {list(ANSWER_LENGTHS)}, got {self.answers}")
        if not self.threads or any(t < 1 for t in self.threads) or len(set(self.threads)) != len(self.threads):
            raise ValueError(f"--threads must be distinct positive integers, got {self.threads}")


_ARGUMENT_KINDS: dict[str, dict[str, Any]] = {
    "num_envs": {"type": int, "nargs": "+"},
    "rounds": {"type": int},
    "max_new_tokens": {"type": int},
    "temperature": {"type": float},
    "seed": {"type": int},
    "threads": {"type": int, "nargs": "+"},
    "answers": {"nargs": "+"},
    "kv_cache": {"choices": list(KV_CACHES)},
    "model_dir": {"type": Path},
    "out_dir": {"type": Path},
    "lora": {"action": argparse.BooleanOptionalAction},
    "cot": {"action": argparse.BooleanOptionalAction},
    "recompute_scores": {"action": argparse.BooleanOptionalAction},
    "progress": {"action": argparse.BooleanOptionalAction},
}


def parse_args(argv: list[str] | None = None) -> ThroughputConfig:
    """Build :class:`ThroughputConfig` from the command line (one flag per field)."""
    defaults = ThroughputConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(ThroughputConfig):
        default = getattr(defaults, f.name)
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            default=default,
            help=f"{f.metadata['help']} (default: {default})",
            **_ARGUMENT_KINDS.get(f.name, {}),
        )
    try:
        return ThroughputConfig(**vars(parser.parse_args(argv)))
    except ValueError as error:
        parser.error(str(error))
        raise  # unreachable: parser.error exits


@dataclass
class ActingRound:
    """The outcome of one timed acting round over N environments."""

    action_indices: list[int]
    texts: list[str]
    generated_tokens: int
    log_probs: list[float]
    values: list[float]
    decode_steps: int = 0
    """Forward passes the batch made after the prefill: its longest answer (a batch waits for it)."""


class ActingLoop:
    """N environments acting with a :class:`VLMPolicy` through an :class:`~vlm_agent.rollout.engine.HFEngine`,
    one batched generation per round.

    Mirrors one :meth:`~vlm_agent.rollout.loop.AgentLoop.step` of training's rollouts (the
    :class:`~vlm_agent.rollout.collector.RolloutCollector`'s loop: environment ``i`` reset once with
    ``seed + i``, then unseeded resets; one generator for the engine's sampling seeds and the
    random rescue of unusable answers), with the same calls in the same order, split into timed stages.
    """

    def __init__(
        self, policy: VLMPolicy, env_id: str, num_envs: int, seed: int, cot: bool, recompute_scores: bool = False
    ) -> None:
        from vlm_agent.prompting.env_prompts import prompt_for
        from vlm_agent.prompting.invalid_actions import InvalidActionPolicy
        from vlm_agent.rollout.engine import HFEngine
        from vlm_agent.rollout.loop import make_env

        self.policy = policy
        self.rng = np.random.default_rng(seed)
        self.engine = HFEngine(policy, self.rng, recompute_scores=recompute_scores)
        self.envs = [make_env(env_id) for _ in range(num_envs)]
        self.num_envs = num_envs
        self.recompute_scores = recompute_scores
        self.template = prompt_for(env_id, cot=cot)
        self.invalid_policy = InvalidActionPolicy("random")
        self.observations = [env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)]
        self.timer = StageTimer()

    def round(self) -> ActingRound:
        """Act once in every environment; time each stage into ``self.timer``."""
        import torch

        from vlm_agent.prompting.invalid_actions import resolve_action
        from vlm_agent.prompting.parsing import parse_action
        from vlm_agent.rollout.environments import observation_image

        policy, engine, timer = self.policy, self.engine, self.timer
        with timer.stage("prompt building"):
            legal_actions, prompts = [], []
            for env in self.envs:
                unwrapped = env.unwrapped
                legal = list(unwrapped.legal_actions())
                legal_actions.append(legal)
                prompts.append(self.template.render(unwrapped.describe(), legal))
            images = [observation_image(observation) for observation in self.observations]
        with timer.stage("preprocessing"):
            inputs = policy.prepare_inputs(images, prompts)
        was_training = policy.model.training
        policy.eval()  # as HFEngine.generate: sample in eval mode, restore the mode afterwards
        try:
            with torch.no_grad():
                seed = int(engine.rng.integers(0, 2**31 - 1))
                if self.recompute_scores:
                    with timer.stage("generation"):
                        samples, _ = engine.sample(inputs, seed=seed, legal_actions=legal_actions)
                    with timer.stage("scoring"):
                        scores = policy.evaluate(samples)
                    for sample, log_prob, value in zip(
                        samples, scores.log_probs.tolist(), scores.values.tolist(), strict=True
                    ):
                        sample.log_prob, sample.value = log_prob, value  # what the PPO buffer would store
                else:
                    with timer.stage("generation"):
                        samples, generation_scores = engine.sample_scored(inputs, seed=seed, legal_actions=legal_actions)
                    with timer.stage("scoring"):
                        engine.score_samples(samples, generation_scores)  # fills sample.log_prob / .value
        finally:
            policy.train(was_training)
        with timer.stage("parsing"):
            indices = []
            for sample, legal in zip(samples, legal_actions, strict=True):
                action = resolve_action(parse_action(sample.text, legal), legal, self.invalid_policy, self.rng)
                indices.append(int(action.index))
        with timer.stage("env step + rendering"):
            for slot, (env, index) in enumerate(zip(self.envs, indices, strict=True)):
                observation, _, terminated, truncated, _ = env.step(index)
                if terminated or truncated:
                    observation, _ = env.reset()  # the next episode continues the env's generator
                self.observations[slot] = observation
        return ActingRound(
            indices,
            [sample.text for sample in samples],
            sum(len(s.completion_ids) for s in samples),
            [s.log_prob for s in samples],
            [s.value for s in samples],
            max(len(s.completion_ids) for s in samples),
        )

    def close(self) -> None:
        for env in self.envs:
            env.close()


@dataclass
class ThroughputResult:
    """Measured rounds for one N at one torch thread count: wall and process CPU seconds of each round, stage totals."""

    num_envs: int
    round_seconds: list[float]
    round_cpu_seconds: list[float]
    generated_tokens: int
    stage_seconds: dict[str, float]
    threads: int = 1
    decode_steps: int = 0
    answers: str = "sampled"

    @property
    def setting(self) -> str:
        """What the N of one measurement share: answer lengths and torch threads."""
        return f"{self.answers} answers, {self.threads} thread{'s' if self.threads > 1 else ''}"

    @property
    def answer_tokens_per_env_step(self) -> float:
        """Mean answer length: what each environment step needed generated."""
        return self.generated_tokens / self.env_steps

    @property
    def decode_steps_per_round(self) -> float:
        """Mean forward passes per batched generation: the longest answer of each round."""
        return self.decode_steps / self.rounds

    @property
    def rounds(self) -> int:
        return len(self.round_seconds)

    @property
    def env_steps(self) -> int:
        return self.num_envs * self.rounds

    @property
    def seconds(self) -> float:
        """Total wall time of the timed rounds."""
        return sum(self.round_seconds)

    @property
    def steps_per_second(self) -> float:
        """``N / median(round wall time)``: a round slowed by another process on the machine barely moves it."""
        return self.num_envs / statistics.median(self.round_seconds)

    @property
    def cpu_steps_per_second(self) -> float:
        """``N / median(round process CPU time)``: what this process itself spent, waiting excluded."""
        return self.num_envs / statistics.median(self.round_cpu_seconds)

    @property
    def shares(self) -> dict[str, float]:
        return time_shares(self.stage_seconds, self.seconds)


def measure_interleaved(
    policy: VLMPolicy, config: ThroughputConfig, bar: Any = None, threads: int = 1, answers: str = "sampled"
) -> list[ThroughputResult]:
    """One warm-up round per N, then ``config.rounds`` timed rounds of every N taken in turn, at
    ``threads`` torch threads, with ``answers`` lengths (see ``--answers``; both restored afterwards).

    Interleaving (round 1 of N = 1, 4, 8, 16, then round 2 of each, ...) exposes every N to the
    same load on a shared machine, so that the ratios between them stay meaningful.
    """
    import torch

    if answers not in ANSWER_LENGTHS:
        raise ValueError(f"answers must be one of {list(ANSWER_LENGTHS)}, got {answers!r}")
    previous_threads, previous_suppressed = torch.get_num_threads(), policy.suppressed_token_ids
    torch.set_num_threads(threads)
    if answers == "fixed":  # the sampler (and evaluate) then never draw EOS: answers run to max_new_tokens
        policy.suppressed_token_ids = [*previous_suppressed, *policy.eos_token_ids]
    loops = {
        n: ActingLoop(policy, f"gym_cards/{config.env}-v0", n, config.seed, config.cot, config.recompute_scores)
        for n in config.num_envs
    }
    wall: dict[int, list[float]] = {n: [] for n in loops}
    cpu: dict[int, list[float]] = {n: [] for n in loops}
    tokens = dict.fromkeys(loops, 0)
    decode_steps = dict.fromkeys(loops, 0)
    try:
        for loop in loops.values():
            loop.round()  # warm-up: first calls allocate caches and buffers
            loop.timer = StageTimer()
        for _ in range(config.rounds):
            for n, loop in loops.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                outcome = loop.round()
                tokens[n] += outcome.generated_tokens
                decode_steps[n] += outcome.decode_steps
                wall[n].append(time.perf_counter() - start)
                cpu[n].append(time.process_time() - start_cpu)
                if bar is not None:
                    bar.update(n)
    finally:
        for loop in loops.values():
            loop.close()
        torch.set_num_threads(previous_threads)
        policy.suppressed_token_ids = previous_suppressed
    return [
        ThroughputResult(n, wall[n], cpu[n], tokens[n], dict(loops[n].timer.seconds), threads, decode_steps[n], answers)
        for n in loops
    ]


def build_policy(config: ThroughputConfig, model_dir: Path) -> VLMPolicy:
    """The model as a :class:`VLMPolicy` on CPU, with LoRA when asked, at the config's sampling settings."""
    from vlm_agent.models.loading import ModelSettings
    from vlm_agent.models.policy import VLMPolicy
    from vlm_agent.models.settings import GenerationSettings

    settings = GenerationSettings(
        temperature=config.temperature, max_new_tokens=config.max_new_tokens, kv_cache=config.kv_cache
    )
    model_settings = ModelSettings(model_name_or_path=str(model_dir), device="cpu", use_lora=config.lora)
    return VLMPolicy.from_model(model_settings, settings, seed=config.seed).eval()


def baseline_of(result: ThroughputResult, results: list[ThroughputResult]) -> ThroughputResult | None:
    """The N = 1 result measured in the same setting as ``result`` (None when N = 1 was not measured)."""
    return next((r for r in results if r.num_envs == 1 and r.setting == result.setting), None)


def batching_summary(results: list[ThroughputResult]) -> list[str]:
    """Sentences comparing N = 8 with N = 1: in each setting, and with the same answer lengths the best
    of each over thread counts."""
    lines = []
    for eight in (r for r in results if r.num_envs == 8):
        base = baseline_of(eight, results)
        if base:
            lines.append(
                f"{eight.setting.capitalize()}: N = 8 acts at {eight.steps_per_second / base.steps_per_second:.1f}x "
                f"the env steps/s of N = 1 ({eight.cpu_steps_per_second / base.cpu_steps_per_second:.1f}x per CPU "
                "second)."
            )
    for answers in dict.fromkeys(r.answers for r in results):
        eights = [r for r in results if r.num_envs == 8 and r.answers == answers]
        ones = [r for r in results if r.num_envs == 1 and r.answers == answers]
        if len({r.threads for r in eights + ones}) > 1 and eights and ones:
            best_eight = max(eights, key=lambda r: r.steps_per_second)
            best_one = max(ones, key=lambda r: r.steps_per_second)
            lines.append(
                f"Best against best, {answers} answers: N = 8 at {best_eight.threads} thread(s) "
                f"{best_eight.steps_per_second:.2f} env steps/s, N = 1 at {best_one.threads} thread(s) "
                f"{best_one.steps_per_second:.2f}: {best_eight.steps_per_second / best_one.steps_per_second:.1f}x."
            )
    if lines:
        lines.append("Target: N = 8 at least 5x N = 1.")
    return lines


def write_results(config: ThroughputConfig, results: list[ThroughputResult], model_note: str) -> None:
    """Write ``rollout_throughput.{md,csv,png}`` into ``config.out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    columns = [*STAGES, "other"]

    def speedups(r: ThroughputResult) -> tuple[float, float]:
        base = baseline_of(r, results)
        if base is None:
            return float("nan"), float("nan")
        return r.steps_per_second / base.steps_per_second, r.cpu_steps_per_second / base.cpu_steps_per_second

    with open(out / f"{RESULT_NAME}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["answers", "threads", "num_envs", "env_steps", "seconds", "env_steps_per_s", "speedup_vs_1", "cpu_env_steps_per_s",
             "cpu_speedup_vs_1", "generated_tokens_per_s", "answer_tokens_per_env_step", "decode_steps_per_round"]
            + [f"share_{c.replace(' ', '_').replace('+', 'and')}" for c in columns]
        )  # fmt: skip
        for r in results:
            speedup, cpu_speedup = speedups(r)
            writer.writerow(
                [r.answers, r.threads, r.num_envs, r.env_steps, f"{r.seconds:.3f}", f"{r.steps_per_second:.3f}", f"{speedup:.2f}",
                 f"{r.cpu_steps_per_second:.3f}", f"{cpu_speedup:.2f}", f"{r.generated_tokens / r.seconds:.1f}",
                 f"{r.answer_tokens_per_env_step:.1f}", f"{r.decode_steps_per_round:.1f}"]
                + [f"{100 * r.shares[c]:.2f}" for c in columns]
            )  # fmt: skip

    header = (
        "| answers | threads | N envs | env steps/s | speedup vs N=1 | env steps per CPU s | CPU speedup | tokens/s | "
        "answer tokens per env step | decode steps per round | "
        + " | ".join(f"{c} %" for c in columns)
        + " |"
    )
    lines = [header, "|---|" + "---:|" * (9 + len(columns))]
    for r in results:
        speedup, cpu_speedup = speedups(r)
        lines.append(
            f"| {r.answers} | {r.threads} | {r.num_envs} | {r.steps_per_second:.2f} | {speedup:.1f}x | {r.cpu_steps_per_second:.2f} | "
            f"{cpu_speedup:.1f}x | {r.generated_tokens / r.seconds:.0f} | {r.answer_tokens_per_env_step:.1f} | "
            f"{r.decode_steps_per_round:.1f} | "
            + " | ".join(f"{100 * r.shares[c]:.1f}" for c in columns)
            + " |"
        )
    summary = batching_summary(results)
    if summary:
        lines += ["", " ".join(summary)]
    command = "python -m benchmarks.rollout_throughput" + ("" if not sys.argv[1:] else " " + " ".join(sys.argv[1:]))
    settings = list(dict.fromkeys(r.setting for r in results))
    lines += [
        "",
        (
            f"gym_cards/{config.env}-v0, {'CoT' if config.cot else 'action-only'} prompt, {model_note}, "
            f"temperature {config.temperature:g}, up to {config.max_new_tokens} new tokens, "
            f"{config.rounds} timed rounds per N after one warm-up round, the N taken in turn round by round, "
            f"seed {config.seed}, {config.kv_cache} key/value cache; settings measured one after the other: "
            f"{'; '.join(settings)}. 'fixed' answers never end at EOS (it is suppressed), so every answer is "
            f"{config.max_new_tokens} tokens and every N does the same work per env step (like `ignore_eos` in "
            "vLLM's throughput benchmarks); 'sampled' answers end where the random model happens to draw EOS, "
            "and a batch runs until its longest answer ends. Env steps/s is N over the median wall time "
            "of a round; per CPU second, over the median process CPU time (what a busy shared machine changes "
            "least). One thread is what `vlm-agent train` uses on CPU unless VLM_AGENT_NUM_THREADS says otherwise: "
            "more threads than free cores make every parallel region wait for a descheduled thread (on this "
            "machine, 2 threads next to one busy process acted 3-4x slower than 1 thread). "
            + (
                "Scoring re-runs the model over prompt + answer (`--recompute-scores`). "
                if config.recompute_scores
                else "Scoring reuses what generation measured (each drawn token's log-prob, the prompt's last "
                "hidden state from the prefill): no second forward. "
            )
            + "Shares are of the wall time of the timed rounds; 'other' is the loop itself."
        ),
        "",
        machine_description() + ".",
        "",
        f"Command: `{command}`",
    ]
    (out / f"{RESULT_NAME}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    sizes = list(dict.fromkeys(r.num_envs for r in results))
    width = 0.8 / len(settings)
    for k, setting in enumerate(settings):
        by_size = {r.num_envs: r for r in results if r.setting == setting}
        xs = [i + (k - (len(settings) - 1) / 2) * width for i, n in enumerate(sizes) if n in by_size]
        bars = left.bar(xs, [by_size[n].steps_per_second for n in sizes if n in by_size], width, label=setting)
        left.bar_label(bars, fmt="%.1f", fontsize=7)
    left.set_xticks(range(len(sizes)), [str(n) for n in sizes])
    left.set_xlabel("parallel environments N (one batched generation)")
    left.set_ylabel("env steps / s")
    left.set_title("Acting throughput")
    left.grid(axis="y", alpha=0.3)
    left.legend(fontsize=8)
    shown = [r for r in results if r.setting == settings[0]]
    labels = [str(r.num_envs) for r in shown]
    bottom = np.zeros(len(shown))
    for column in columns:
        values = np.array([100 * max(0.0, r.shares[column]) for r in shown])
        right.bar(labels, values, bottom=bottom, label=column)
        bottom += values
    right.set_xlabel("parallel environments N")
    right.set_ylabel("share of wall time (%)")
    right.set_title(f"Where the time goes ({settings[0]})")
    right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(out / f"{RESULT_NAME}.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Build (or load) the tiny model, measure every N, write the result files, print the table."""
    config = parse_args(argv)
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        from tqdm import tqdm
    except ImportError as error:
        raise ImportError(
            f"the rollout benchmark needs the agent extra ({error}); "
            'install it with `pip install "gym-cards-vlm[agent]"`'
        ) from error

    from vlm_agent.demo.tiny_models import make_tiny_model

    with tempfile.TemporaryDirectory(prefix="rollout_throughput_") as scratch:
        model_dir = config.model_dir or make_tiny_model(config.arch, Path(scratch) / config.arch, seed=config.seed)
        policy = build_policy(config, model_dir)
        parameters = sum(p.numel() for p in policy.model.parameters())
        kind = f"tiny random {config.arch}" if config.model_dir is None else str(config.model_dir)
        lora = " incl. LoRA r=128" if config.lora else ""
        model_note = f"{kind} ({parameters / 1e6:.2f}M parameters{lora})"
        total = sum(config.rounds * n for n in config.num_envs) * len(config.threads) * len(config.answers)
        results: list[ThroughputResult] = []
        with tqdm(total=total, desc="env steps", unit="step", disable=not config.progress) as bar:
            for answers in config.answers:
                for threads in config.threads:
                    results += measure_interleaved(policy, config, bar, threads=threads, answers=answers)
    for r in results:
        base = baseline_of(r, results)
        speedup = f", {r.steps_per_second / base.steps_per_second:.1f}x N=1" if base else ""
        shares = ", ".join(f"{name} {100 * share:.0f}%" for name, share in r.shares.items())
        print(
            f"{r.setting}, N={r.num_envs}: {r.steps_per_second:.2f} env steps/s{speedup}, "
            f"{r.cpu_steps_per_second:.2f} per CPU second ({shares})"
        )
    for line in batching_summary(results):
        print(line)
    write_results(config, results, model_note)
    print(f"wrote {config.out_dir / RESULT_NAME}.{{md,csv,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
