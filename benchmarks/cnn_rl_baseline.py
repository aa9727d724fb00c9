"""CNN + RL baseline: PPO with a convolutional policy on the pixels of each card game.

The paper's "CNN + RL" row (NumberLine 87.1, EZPoints 0, Points24 0, Blackjack 38.8 % success)
trains a CNN policy with PPO from the rendered frames, with the same environment-step budget as
the VLM runs (15000 steps for the card games), and reports the PEAK success rate of the training
episodes within that budget. This script does the same with stable-baselines3's PPO and its
NatureCNN feature extractor on frames downscaled from 300x300 to ``--frame-size`` pixels, reports
that peak training success, and also evaluates every trained policy on held-out seeds (reset
seeds that no training environment used) with a 95% Wilson interval. Held-out actions are sampled
from the policy by default, as in the training episodes the paper's curves count;
``--eval-policy greedy`` (or ``both``) takes the most likely action instead, which can loop until
the time limit (expensive on EZPoints/Points24, whose limit is 300 steps).

A single seed is noisy (NumberLine, 15000 steps, lr 5e-4: 67, 78 and 92 % held-out success for
seeds 0, 1, 2), so every training run is repeated for each of ``--seeds`` (default 0..4) and the
table reports the mean with the per-seed values. Every game trains with the paper's budget (``--total-steps``, 15000)
at ``--learning-rate`` 5e-4, the learning rate of OpenAI's and CleanRL's Procgen PPO (the standard
PPO setup for pixel games; the paper gives no CNN hyperparameters). ``--learning-rate-variants``
adds runs at the paper budget with other learning rates: by default NumberLine at 2.5e-4 and 1e-3,
because the NumberLine result depends strongly on it. ``--longer-budgets`` names games that also
train from scratch (main learning rate) for more steps. ``--number-line-drawing`` trains on
NumberLine's drawn number line (``show_number_line=True``) instead, which the paper's image did not
have. The (run, seed) jobs run in ``--workers`` processes; every job is seeded on its own, so the
results do not depend on the number of workers.

Writes ``benchmarks/results/cnn_rl_baseline.{md,csv,png}`` (table against the paper, one row per
game and run aggregated over seeds; learning curves of training episodes) and
``cnn_rl_baseline_curves.csv`` (every training episode of every run and seed).

Usage (from the repository root)::

    python -m benchmarks.cnn_rl_baseline            # 4 games + NumberLine at 2 more lrs, seeds 0..4
    python -m benchmarks.cnn_rl_baseline --envs NumberLine --seeds 0 1 2 --learning-rate-variants NumberLine=1e-3
    python -m benchmarks.cnn_rl_baseline --envs Blackjack --learning-rate-variants --longer-budgets Blackjack=50000
    python -m benchmarks.cnn_rl_baseline --envs NumberLine Blackjack --eval-policy both --workers 1
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
from PIL import Image

from benchmarks.make_readme import RESULTS_DIR, available_cores, machine_description
from vlm_agent.evaluation.statistics import wilson_interval
from vlm_agent.rollout.loop import held_out_seed

if TYPE_CHECKING:  # stable-baselines3 (and torch) load only once training starts
    from stable_baselines3 import PPO

RESULT_NAME = "cnn_rl_baseline"
PAPER_CNN_RL_SUCCESS = {"NumberLine": 87.1, "EZPoints": 0.0, "Points24": 0.0, "Blackjack": 38.8}
"""Peak training success rate (%) of the paper's CNN + RL baseline (Zhai et al. 2024, Table 1)."""
PEAK_WINDOW = 100
"""Training success is smoothed over the last PEAK_WINDOW episodes before taking its peak."""
EVAL_POLICIES = {"sampled": ("sampled",), "greedy": ("greedy",), "both": ("sampled", "greedy")}
"""``--eval-policy`` value -> the evaluation modes it runs."""
PAPER_BUDGET = 15000
"""Environment steps per card game in the paper's runs."""
SEEDS = [0, 1, 2, 3, 4]
"""Default ``--seeds``: one seed is too noisy (NumberLine, 15000 steps, lr 5e-4: 67/78/92 % held-out, seeds 0/1/2)."""
LEARNING_RATE = 5e-4
"""Default ``--learning-rate``: OpenAI's and CleanRL's Procgen PPO, the standard PPO setup for pixel games."""
LEARNING_RATE_VARIANTS = {"NumberLine": [2.5e-4, 1e-3]}
"""Default ``--learning-rate-variants``: games that also train at the paper budget with other learning rates.

NumberLine because its result depends strongly on the learning rate (15000 steps, held-out success
over seeds 0/1/2: 61-74 % at 2.5e-4, 67-92 % at 5e-4, 99.8-100 % at 1e-3); the paper gives no CNN
hyperparameters, so these rows show how much its number can depend on them.
"""


@dataclass(frozen=True)
class TrainingRun:
    """One training setting of one game; it is trained once per seed.

    ``budget`` is "paper" (``--total-steps``) or "longer" (``--longer-budgets``);
    ``learning_rate_variant`` marks a paper-budget run at a ``--learning-rate-variants`` rate
    instead of the main ``--learning-rate``.
    """

    game: str
    budget: str
    total_steps: int
    learning_rate: float
    learning_rate_variant: bool = False

    @property
    def label(self) -> str:
        """Name of the run in the tables: "paper", "paper, lr 0.001" or "longer"."""
        return f"{self.budget}, lr {self.learning_rate:g}" if self.learning_rate_variant else self.budget


@dataclass
class CnnBaselineConfig:
    """Arguments of the CNN + RL baseline; each field's ``help`` becomes its ``--help`` line."""

    envs: list[str] = field(
        default_factory=lambda: list(PAPER_CNN_RL_SUCCESS),
        metadata={"help": "card games to train on (names of gym_cards/<Name>-v0)"},
    )
    total_steps: int = field(
        default=PAPER_BUDGET, metadata={"help": f"training env steps per game, the paper budget (paper: {PAPER_BUDGET})"}
    )
    seeds: list[int] = field(
        default_factory=lambda: list(SEEDS),
        metadata={
            "help": "every training run is repeated once per seed (seed of training envs, network init and "
            "sampling; held-out episodes use reset seeds 10**9 + seed + k)"
        },
    )
    learning_rate_variants: dict[str, list[float]] = field(
        default_factory=lambda: {name: list(rates) for name, rates in LEARNING_RATE_VARIANTS.items()},
        metadata={
            "help": "games (among --envs) that also train at the paper budget with other learning rates, as "
            "GAME=LR[,LR...]; the flag with no value trains the main --learning-rate only"
        },
    )
    longer_budgets: dict[str, int] = field(
        default_factory=dict,
        metadata={
            "help": "games (among --envs) that also train from scratch for more steps at the main learning rate, "
            "as GAME=STEPS; the flag with no value trains the paper budget only"
        },
    )
    number_line_drawing: bool = field(
        default=False,
        metadata={
            "help": "NumberLine frames also draw the number line, target flag and position marker "
            "(show_number_line=True); the paper's image has the two numbers as text only"
        },
    )
    workers: int = field(
        default_factory=available_cores,
        metadata={
            "help": "(run, seed) jobs trained at once, one process and one torch thread each; 1 trains in this "
            "process with per-run progress bars. Results do not depend on it; defaults to the CPU cores this "
            "process may use"
        },
    )
    n_envs: int = field(default=4, metadata={"help": "parallel training envs (one DummyVecEnv process)"})
    n_steps: int = field(default=128, metadata={"help": "rollout length per env per PPO update"})
    batch_size: int = field(default=128, metadata={"help": "PPO mini-batch size"})
    n_epochs: int = field(default=4, metadata={"help": "PPO epochs per update"})
    learning_rate: float = field(
        default=LEARNING_RATE,
        metadata={
            "help": "Adam learning rate (constant); 5e-4 is the learning rate of OpenAI's and CleanRL's Procgen "
            "PPO, the standard PPO setup for pixel games"
        },
    )
    gamma: float = field(default=0.9, metadata={"help": "discount factor (paper's VLM runs: 0.9)"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda"})
    clip_range: float = field(default=0.1, metadata={"help": "PPO clip range"})
    ent_coef: float = field(default=0.01, metadata={"help": "entropy bonus coefficient"})
    frame_size: int = field(default=84, metadata={"help": "frames are downscaled to frame_size x frame_size RGB"})
    eval_episodes: int = field(default=1000, metadata={"help": "held-out evaluation episodes per run and seed"})
    eval_envs: int = field(default=16, metadata={"help": "envs stepped together during evaluation"})
    eval_policy: str = field(
        default="sampled",
        metadata={
            "help": "evaluation actions: 'sampled' from the policy (as training episodes, the paper's numbers), "
            "'greedy' (most likely action) or 'both'"
        },
    )
    out_dir: Path = field(default=RESULTS_DIR, metadata={"help": "directory for the result files"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    report_only: bool = field(
        default=False,
        metadata={
            "help": "train nothing: rebuild the table and plot from the CSV files a finished run left in --out-dir "
            "(same flags as that run)"
        },
    )

    def __post_init__(self) -> None:
        unknown = [name for name in self.envs if name not in PAPER_CNN_RL_SUCCESS]
        if unknown or not self.envs:
            raise ValueError(f"--envs must name some of {list(PAPER_CNN_RL_SUCCESS)}, got {self.envs}")
        positive = (
            "total_steps", "workers", "n_envs", "n_steps", "batch_size", "n_epochs", "eval_episodes", "eval_envs",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if not self.seeds:
            raise ValueError("--seeds must name at least one seed, e.g. --seeds 0 1 2")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds must be unique (a repeated seed repeats the same run), got {self.seeds}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"--learning-rate must be a positive finite number, got {self.learning_rate}")
        for name, rates in self.learning_rate_variants.items():
            if name not in PAPER_CNN_RL_SUCCESS:
                raise ValueError(
                    f"--learning-rate-variants must name games of {list(PAPER_CNN_RL_SUCCESS)}, got {name!r}"
                )
            if not rates:
                raise ValueError(f"--learning-rate-variants {name}= needs at least one learning rate, e.g. {name}=1e-3")
            for rate in rates:
                if not (math.isfinite(rate) and rate > 0):
                    raise ValueError(
                        f"--learning-rate-variants {name}: learning rates must be positive finite numbers, got {rate}"
                    )
                if math.isclose(rate, self.learning_rate, rel_tol=1e-9):
                    raise ValueError(
                        f"--learning-rate-variants {name}={rate:g} equals --learning-rate ({self.learning_rate:g}), "
                        "which the paper-budget run already uses; give --learning-rate-variants other rates "
                        "(or no value, for none)"
                    )
            if len(set(rates)) != len(rates):
                raise ValueError(f"--learning-rate-variants {name}: learning rates must be unique, got {rates}")
        for name, steps in self.longer_budgets.items():
            if name not in PAPER_CNN_RL_SUCCESS:
                raise ValueError(f"--longer-budgets must name games of {list(PAPER_CNN_RL_SUCCESS)}, got {name!r}")
            if steps <= self.total_steps:
                raise ValueError(
                    f"--longer-budgets {name}={steps} must be more than --total-steps ({self.total_steps})"
                )
        if self.eval_policy not in EVAL_POLICIES:
            raise ValueError(f"--eval-policy must be one of {list(EVAL_POLICIES)}, got {self.eval_policy!r}")
        if self.frame_size < 36:
            raise ValueError(f"--frame-size must be at least 36 (NatureCNN's smallest input), got {self.frame_size}")
        if (self.n_envs * self.n_steps) % self.batch_size:
            raise ValueError(
                f"--batch-size ({self.batch_size}) must divide n_envs * n_steps ({self.n_envs * self.n_steps})"
            )
        if not 0.0 < self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError("--gamma must lie in (0, 1] and --gae-lambda in [0, 1]")

    def training_runs(self) -> list[TrainingRun]:
        """Every training setting, in table order: for each game in ``envs``, the paper budget at the
        main learning rate, then the paper budget at each of its learning rate variants, then its
        longer budget if it has one. Each is trained once per seed (see :meth:`jobs`)."""
        runs = []
        for name in self.envs:
            runs.append(TrainingRun(name, "paper", self.total_steps, self.learning_rate))
            for rate in self.learning_rate_variants.get(name, []):
                runs.append(TrainingRun(name, "paper", self.total_steps, rate, learning_rate_variant=True))
            if name in self.longer_budgets:
                runs.append(TrainingRun(name, "longer", self.longer_budgets[name], self.learning_rate))
        return runs

    def jobs(self) -> list[tuple[TrainingRun, int]]:
        """(run, seed) of every independent training job: each run of :meth:`training_runs` x each seed."""
        return [(run, seed) for run in self.training_runs() for seed in self.seeds]

    def number_line_image(self) -> str:
        """Plain words for the NumberLine frame the CNN sees."""
        if self.number_line_drawing:
            return (
                "the two numbers as text plus a drawn number line, target flag and position marker "
                "(not the paper's image)"
            )
        return "only the text 'Target: x' and 'Current: y', as published"


def game_budget(text: str) -> tuple[str, int]:
    """Parse one ``--longer-budgets`` item, ``GAME=STEPS`` (e.g. ``NumberLine=100000``)."""
    name, sep, steps = text.partition("=")
    if not sep or not steps.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected GAME=STEPS such as NumberLine=100000, got {text!r}")
    return name.strip(), int(steps)


def game_learning_rates(text: str) -> tuple[str, list[float]]:
    """Parse one ``--learning-rate-variants`` item, ``GAME=LR[,LR...]`` (e.g. ``NumberLine=2.5e-4,1e-3``)."""
    name, sep, rates = text.partition("=")
    try:
        values = [float(rate) for rate in rates.split(",")]
    except ValueError:
        values = []
    if not sep or not name.strip() or not values:
        raise argparse.ArgumentTypeError(
            f"expected GAME=LR[,LR...] such as NumberLine=2.5e-4,1e-3 (comma-separated, no spaces), got {text!r}"
        )
    return name.strip(), values


def parse_args(argv: list[str] | None = None) -> CnnBaselineConfig:
    """Build :class:`CnnBaselineConfig` from the command line (one flag per field)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(CnnBaselineConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if f.name == "longer_budgets":
            shown = " ".join(f"{name}={steps}" for name, steps in default.items()) or "none"
            help_text = f"{f.metadata['help']} (default: {shown})"
            parser.add_argument(
                flag, nargs="*", type=game_budget, default=list(default.items()), metavar="GAME=STEPS", help=help_text
            )
            continue
        if f.name == "learning_rate_variants":
            shown = " ".join(f"{name}={','.join(f'{r:g}' for r in rates)}" for name, rates in default.items())
            help_text = f"{f.metadata['help']} (default: {shown or 'none'})"
            parser.add_argument(
                flag,
                nargs="*",
                type=game_learning_rates,
                default=list(default.items()),
                metavar="GAME=LR[,LR...]",
                help=help_text,
            )
            continue
        help_text = f"{f.metadata['help']} (default: {default})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif f.name == "envs":
            parser.add_argument(flag, nargs="+", default=default, help=help_text)
        elif f.name == "seeds":
            parser.add_argument(flag, nargs="+", type=int, default=default, metavar="SEED", help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str, "Path": Path}[str(f.type)]
            parser.add_argument(flag, type=kind, default=default, help=help_text)
    args = vars(parser.parse_args(argv))
    args["longer_budgets"] = dict(args["longer_budgets"])
    names = [name for name, _ in args["learning_rate_variants"]]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        parser.error(
            f"--learning-rate-variants names {', '.join(repeated)} more than once; give each game's learning rates "
            "in one item, comma-separated (e.g. NumberLine=2.5e-4,1e-3)"
        )
    args["learning_rate_variants"] = dict(args["learning_rate_variants"])
    try:
        return CnnBaselineConfig(**args)
    except ValueError as error:
        parser.error(str(error))
        raise  # unreachable: parser.error exits
def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``min(window, i + 1)`` values at every index i (a trailing window)."""
    cumulative = np.concatenate([[0.0], np.cumsum(values, dtype=float)])
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(0, idx - window)
    return (cumulative[idx] - cumulative[start]) / (idx - start)


class DownscaledFrame(gym.ObservationWrapper):
    """Downscale the env's RGB frame to ``size x size`` with PIL (area averaging keeps text legible)."""

    def __init__(self, env: gym.Env, size: int) -> None:
        super().__init__(env)
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), dtype=np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        image = Image.fromarray(np.asarray(observation, dtype=np.uint8))
        return np.asarray(image.resize((self.size, self.size), Image.Resampling.BOX), dtype=np.uint8)


def make_card_env(name: str, frame_size: int, number_line_drawing: bool = False) -> gym.Env:
    """``gym_cards/<name>-v0`` with downscaled frames (the env's own TimeLimit included).

    ``number_line_drawing`` applies to NumberLine only (its ``show_number_line``).
    """
    import gym_cards  # noqa: F401  (registers the ids)

    kwargs = {"show_number_line": True} if name == "NumberLine" and number_line_drawing else {}
    return DownscaledFrame(gym.make(f"gym_cards/{name}-v0", **kwargs), frame_size)


@dataclass
class TrainingEpisode:
    """One finished training episode, for the learning curve."""

    env_step: int
    success: bool
    episode_return: float
    length: int


def train(
    config: CnnBaselineConfig, run: TrainingRun, seed: int, progress: bool = True
) -> tuple[PPO, list[TrainingEpisode], float]:
    """Train PPO on ``run.game`` for ``run.total_steps`` env steps at ``run.learning_rate``, with
    ``seed`` for the training envs, network init and action sampling; return the model, its
    training episodes and the wall time (s). ``progress`` shows a tqdm bar."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger
    from tqdm import tqdm

    name, total_steps = run.game, run.total_steps

    class EpisodeRecorder(BaseCallback):
        """Collect every finished episode (Monitor puts it in ``info["episode"]``); tick a tqdm bar.

        tqdm rather than SB3's rich bar: it also writes readable progress into a nohup log.
        """

        def __init__(self) -> None:
            super().__init__()
            self.episodes: list[TrainingEpisode] = []
            self.bar = tqdm(
                total=total_steps, desc=f"train {name} ({run.label}, seed {seed}, {total_steps})", disable=not progress
            )

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.episodes.append(
                        TrainingEpisode(
                            env_step=int(self.num_timesteps),
                            success=bool(info["episode"]["success"]),
                            episode_return=float(info["episode"]["r"]),
                            length=int(info["episode"]["l"]),
                        )
                    )
            self.bar.update(min(self.training_env.num_envs, total_steps - self.bar.n))
            if self.episodes and self.n_calls % 16 == 0:
                recent = self.episodes[-PEAK_WINDOW:]
                self.bar.set_postfix(success=f"{sum(e.success for e in recent) / len(recent):.2f}")
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    vec_env = make_vec_env(
        lambda: make_card_env(name, config.frame_size, config.number_line_drawing),
        n_envs=config.n_envs,
        seed=seed,
        monitor_kwargs={"info_keywords": ("success",)},
    )
    model = PPO(
        "CnnPolicy",
        vec_env,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        n_epochs=config.n_epochs,
        learning_rate=run.learning_rate,
        gamma=config.gamma,
        gae_lambda=config.gae_lambda,
        clip_range=config.clip_range,
        ent_coef=config.ent_coef,
        seed=seed,
        device="cpu",
        verbose=0,
    )
    # No output formats: SB3's default logger would create an empty tempdir/SB3-<date> folder per run.
    model.set_logger(Logger(folder=None, output_formats=[]))
    recorder = EpisodeRecorder()
    start = time.perf_counter()
    model.learn(total_timesteps=total_steps, callback=recorder)
    seconds = time.perf_counter() - start
    vec_env.close()
    return model, recorder.episodes, seconds


@dataclass
class HeldOutEvaluation:
    """Successes over held-out episodes with one way of choosing actions."""

    policy: str
    successes: int
    episodes: int
    seconds: float

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes

    @property
    def interval(self) -> tuple[float, float]:
        """95% Wilson interval of the success rate."""
        return wilson_interval(self.successes, self.episodes)


def evaluate(
    model: PPO, config: CnnBaselineConfig, name: str, policy: str, seed: int, progress: bool = True
) -> HeldOutEvaluation:
    """Run ``config.eval_episodes`` held-out episodes, actions ``policy`` ("sampled" or "greedy").

    Episode k is reset with seed ``held_out_seed(seed, k)`` (10**9 + seed + k, the project's
    evaluation seeds), far from the training seeds ``seed .. seed + n_envs - 1``, so the deals
    come from seeded streams that training never drew from. A greedy policy can loop (e.g. "-",
    "+", "-", ... on NumberLine, or an invalid card on EZPoints) until the episode's step limit
    (NumberLine: 10 steps, EZPoints/Points24: 300); a sampled one walks out of such loops.
    """
    from tqdm import tqdm

    count = min(config.eval_envs, config.eval_episodes)
    envs = [make_card_env(name, config.frame_size, config.number_line_drawing) for _ in range(count)]
    next_episode = 0
    observations: list[np.ndarray | None] = []
    for env in envs:
        obs, _ = env.reset(seed=held_out_seed(seed, next_episode))
        next_episode += 1
        observations.append(obs)
    successes = finished = 0
    start = time.perf_counter()
    desc = f"eval {name} ({policy}, seed {seed})"
    with tqdm(total=config.eval_episodes, desc=desc, disable=not progress) as bar:
        while finished < config.eval_episodes:
            active = [i for i, obs in enumerate(observations) if obs is not None]
            actions, _ = model.predict(np.stack([observations[i] for i in active]), deterministic=policy == "greedy")
            for i, action in zip(active, actions, strict=True):
                obs, _, terminated, truncated, info = envs[i].step(int(action))
                if not (terminated or truncated):
                    observations[i] = obs
                    continue
                successes += bool(info["success"])
                finished += 1
                bar.update(1)
                if next_episode < config.eval_episodes:
                    observations[i], _ = envs[i].reset(seed=held_out_seed(seed, next_episode))
                    next_episode += 1
                else:
                    observations[i] = None
    for env in envs:
        env.close()
    return HeldOutEvaluation(policy, successes, finished, time.perf_counter() - start)


def peak_success(episodes: list[TrainingEpisode], window: int = PEAK_WINDOW) -> float:
    """Highest trailing-window success rate of training episodes, counted once a window is full.

    This is the paper's way of reporting (peak within the step budget); with fewer than
    ``window`` episodes it is the success rate of all of them.
    """
    return peak_rate(np.array([e.success for e in episodes], dtype=float), window)


def peak_rate(success: np.ndarray, window: int = PEAK_WINDOW) -> float:
    """:func:`peak_success` of a 0/1 array of episode outcomes (NaN when it is empty)."""
    if len(success) == 0:
        return float("nan")
    if len(success) < window:
        return float(success.mean())
    return float(rolling_mean(success, window)[window - 1 :].max())


@dataclass
class RunResult:
    """Outcome of one (training run, seed) job: training episodes, held-out success(es), timings."""

    run: TrainingRun
    seed: int
    train_steps: int
    train_seconds: float
    episodes: list[TrainingEpisode]
    evaluations: list[HeldOutEvaluation]

    @property
    def train_episodes(self) -> int:
        return len(self.episodes)

    @property
    def peak_train_success(self) -> float:
        """The paper's metric: best success rate over PEAK_WINDOW consecutive training episodes."""
        return peak_success(self.episodes)


def run_job(config: CnnBaselineConfig, run: TrainingRun, seed: int, progress: bool = True) -> RunResult:
    """Train one run with one seed and evaluate it on held-out episodes with every ``--eval-policy``.

    Self-contained and seeded (``seed`` for the envs, network init and sampling; the held-out
    reset seeds from it), so it gives the same result in this process or in a worker process.
    """
    model, episodes, train_seconds = train(config, run, seed, progress)
    evaluations = [
        evaluate(model, config, run.game, policy, seed, progress) for policy in EVAL_POLICIES[config.eval_policy]
    ]
    return RunResult(
        run=run,
        seed=seed,
        train_steps=int(model.num_timesteps),
        train_seconds=train_seconds,
        episodes=episodes,
        evaluations=evaluations,
    )


def init_worker() -> None:
    """Start of every worker process: one torch thread, so ``--workers`` jobs share the cores evenly."""
    import torch

    torch.set_num_threads(1)


def finished_jobs(config: CnnBaselineConfig) -> Iterator[RunResult]:
    """Run every job of ``config.jobs()`` and yield each result as soon as it is done.

    With one worker (or one job) the jobs run here, one after the other, with per-job progress
    bars; otherwise in a pool of ``config.workers`` "spawn" processes (fresh interpreters: no
    forked torch state), without per-job bars, in order of completion.
    """
    jobs = config.jobs()
    workers = min(config.workers, len(jobs))
    if workers == 1:
        for run, seed in jobs:
            yield run_job(config, run, seed, config.progress)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=init_worker) as pool:
        futures = [pool.submit(run_job, config, run, seed, False) for run, seed in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:  # a failed job (or Ctrl-C): don't start the queued ones before re-raising
            for future in futures:
                future.cancel()
            raise


def noise_only_peak(success_rate: float, episodes: int, window: int = PEAK_WINDOW, repeats: int = 200) -> float:
    """Expected peak training success of a policy whose success rate never changes.

    The peak of a rolling mean over ``window`` episodes rises above the true rate from sampling
    noise alone, the more so the more windows a run has and the closer the rate is to 50%: e.g. a
    constant 38% over 14000 episodes peaks near 53% on 100-episode windows. Estimated as the mean
    of :func:`peak_success` over ``repeats`` runs of ``episodes`` independent Bernoulli(success_rate)
    episodes (fixed seed, so the number is reproducible).
    """
    outcomes = np.random.default_rng(0).random((repeats, episodes)) < success_rate
    return float(np.mean([peak_rate(run, window) for run in outcomes]))


def mean_and_per_seed(values: list[float]) -> str:
    """``"79.1 (67.4, 77.8, 92.0)"``: the mean, then each seed's value; a single value alone."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{float(np.mean(values)):.1f} ({', '.join(f'{v:.1f}' for v in values)})"


def group_by_run(results: list[RunResult]) -> dict[TrainingRun, list[RunResult]]:
    """The results of each run, runs in the order they first appear (results come sorted)."""
    groups: dict[TrainingRun, list[RunResult]] = {}
    for result in results:
        groups.setdefault(result.run, []).append(result)
    return groups


def write_results(
    config: CnnBaselineConfig, results: list[RunResult], command: str, machine: str | None = None
) -> None:
    """Write ``cnn_rl_baseline.{md,csv,png}`` and ``cnn_rl_baseline_curves.csv`` into ``config.out_dir``.

    ``results`` are the finished (run, seed) jobs sorted in ``config.jobs()`` order (it may be
    a part of them while the benchmark runs); ``command`` is the command line that reproduces
    the results; ``machine`` the machine line (default: this machine now).
    """
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    header = [
        "env", "budget", "learning_rate", "seed", "train_steps", "eval_policy", "paper_success", "success", "ci95_low",
        "ci95_high", "eval_episodes", "peak_train_success", "train_episodes", "train_seconds", "eval_seconds",
        "frame_size", "number_line_drawing",
    ]  # fmt: skip
    with open(out / f"{RESULT_NAME}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in results:
            for e in r.evaluations:
                low, high = e.interval
                writer.writerow([
                    r.run.game, r.run.label, f"{r.run.learning_rate:g}", r.seed, r.train_steps, e.policy,
                    PAPER_CNN_RL_SUCCESS[r.run.game], f"{100 * e.success_rate:.2f}", f"{100 * low:.2f}",
                    f"{100 * high:.2f}", e.episodes, f"{100 * r.peak_train_success:.2f}", r.train_episodes,
                    f"{r.train_seconds:.1f}", f"{e.seconds:.1f}", config.frame_size, int(config.number_line_drawing),
                ])  # fmt: skip
    with open(out / f"{RESULT_NAME}_curves.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["env", "budget", "learning_rate", "seed", "env_step", "success", "return", "length"])
        for r in results:
            for e in r.episodes:
                writer.writerow([
                    r.run.game, r.run.label, f"{r.run.learning_rate:g}", r.seed, e.env_step, int(e.success),
                    e.episode_return, e.length,
                ])  # fmt: skip

    groups = group_by_run(results)
    policies = EVAL_POLICIES[config.eval_policy]
    eval_columns = "".join(f" held-out {p}, mean (per seed) | pooled 95% interval |" for p in policies)
    lines = [
        (
            "| game | run | lr | train steps | seeds | paper CNN+RL (peak) | peak training success, mean (per seed) |"
            f"{eval_columns} train time per run |"
        ),
        "|---|---|---:|---:|---|---:|---:|" + "---:|---|" * len(policies) + "---:|",
    ]
    for run, runs in groups.items():
        cells = ""
        for i, _ in enumerate(policies):
            evaluations = [r.evaluations[i] for r in runs]
            low, high = wilson_interval(sum(e.successes for e in evaluations), sum(e.episodes for e in evaluations))
            per_seed = mean_and_per_seed([100 * e.success_rate for e in evaluations])
            cells += f" {per_seed} | [{100 * low:.1f}, {100 * high:.1f}] |"
        steps = ", ".join(str(s) for s in sorted({r.train_steps for r in runs}))
        peak = mean_and_per_seed([100 * r.peak_train_success for r in runs])
        seconds = float(np.mean([round(r.train_seconds, 1) for r in runs]))  # as in the CSV: --report-only agrees
        lines.append(
            f"| {run.game} | {run.label} | {run.learning_rate:g} | {steps} | {', '.join(str(r.seed) for r in runs)} | "
            f"{PAPER_CNN_RL_SUCCESS[run.game]:.1f} | {peak} |{cells} {seconds:.0f} s |"
        )
    headline = {
        run.game: runs for run, runs in groups.items() if run.budget == "paper" and not run.learning_rate_variant
    }
    if headline:
        lines += [
            "",
            f"Paper budget at lr {config.learning_rate:g} against the paper, on its metric (peak training success) "
            f"and on held-out episodes ({policies[0]}); 'noise-only peak' is the peak a policy with a constant "
            f"success rate equal to its held-out one would show over the same number of training episodes, from "
            f"the noise of {PEAK_WINDOW}-episode windows alone (mean over seeds; a policy that is still learning "
            "peaks lower):",
            "",
        ]
    for name, runs in headline.items():
        mean_peak = float(np.mean([100 * r.peak_train_success for r in runs]))
        held_out = float(np.mean([100 * r.evaluations[0].success_rate for r in runs]))
        noise_peak = 100 * float(
            np.mean([noise_only_peak(r.evaluations[0].success_rate, r.train_episodes) for r in runs])
        )
        paper = PAPER_CNN_RL_SUCCESS[name]
        lines.append(
            f"- {name}: mean peak training success {mean_peak:.1f} vs paper {paper:.1f} ({mean_peak - paper:+.1f} "
            f"points); held-out {held_out:.1f} ({held_out - paper:+.1f}); noise-only peak {noise_peak:.1f}; over "
            f"{len(runs)} seed{'s' if len(runs) > 1 else ''}."
        )
    episodes = results[0].evaluations[0].episodes
    variant_games = list(dict.fromkeys(run.game for run in groups if run.learning_rate_variant))
    variant_text = (
        f"Run 'paper, lr X' is the same budget at learning rate X: the paper gives no CNN hyperparameters; the "
        f"{', '.join(variant_games)} rows at other learning rates show how much the number depends on it. "
        if variant_games
        else ""
    )
    lines += [
        "",
        (
            f"Every row aggregates independent runs, one per seed ({', '.join(str(s) for s in config.seeds)} requested; "
            "the seed sets the training envs, network init and action sampling); a cell gives the mean over seeds, "
            "then each seed's value in the order of the 'seeds' column. Peak training success = best success rate "
            f"over {PEAK_WINDOW} consecutive training episodes, the paper's metric (it reports the peak within the "
            f"step budget). Held-out: success rate in % of {episodes} episodes per seed, episode k reset with seed "
            f"{held_out_seed(0, 0)} + seed + k (no training env used these; consecutive seeds share most deals); "
            "'sampled' draws actions from the policy as in training, 'greedy' takes the most likely action. The "
            "pooled 95% interval is the Wilson interval of all seeds' held-out episodes together: it covers the "
            "episode sampling noise, not the spread between seeds, which the per-seed values show. "
            f"Run 'paper' is the paper's {PAPER_BUDGET} env steps per game (here --total-steps {config.total_steps}) "
            f"at the main learning rate {config.learning_rate:g}. {variant_text}"
            "'longer' is a separate run from scratch with the main learning rate and more steps. PPO "
            f"(stable-baselines3, CnnPolicy/NatureCNN) on {config.frame_size}x{config.frame_size} RGB frames, "
            f"{config.n_envs} envs x {config.n_steps} steps per update, {config.n_epochs} epochs, mini-batch "
            f"{config.batch_size}, lr {config.learning_rate:g} unless the row says otherwise (the learning rate of "
            f"OpenAI's and CleanRL's Procgen PPO), gamma {config.gamma:g}, GAE lambda {config.gae_lambda:g}, clip "
            f"{config.clip_range:g}, entropy {config.ent_coef:g}, one torch thread per run, {config.workers} "
            "run(s) at a time. Train steps are the budget rounded up to whole PPO updates; train time is the mean "
            "wall time of one run."
        ),
        "",
        f"NumberLine image seen by the CNN: {config.number_line_image()}.",
        "",
        (machine or machine_description()) + ".",
        "",
        f"Command: `{command}`",
    ]
    (out / f"{RESULT_NAME}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_results(config, groups, out / f"{RESULT_NAME}.png")


def plot_results(config: CnnBaselineConfig, groups: dict[TrainingRun, list[RunResult]], path: Path) -> None:
    """One panel per game: each seed's smoothed training curve (one colour per run), the paper's
    number, and the held-out mean of each run with min-max over seeds.

    The legend has one entry per run colour and one per held-out marker shape rather than one per
    line, so that it stays small enough not to hide the curves.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = list(dict.fromkeys(run.game for run in groups))
    cols = min(2, len(games))
    rows = math.ceil(len(games) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 4.0 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = {"sampled": "o", "greedy": "s"}
    policies = EVAL_POLICIES[config.eval_policy]
    for ax, name in zip(axes.flat, games, strict=False):  # spare axes are switched off below
        runs = {run: results for run, results in groups.items() if run.game == name}
        widest = max(run.total_steps for run in runs)
        for index, (run, results) in enumerate(runs.items()):
            colour = colours[index % len(colours)]
            ax.plot([], [], color=colour, label=run.label)  # legend entry of the run's colour
            for r in results:
                if len(r.episodes) < PEAK_WINDOW:
                    continue
                steps = np.array([e.env_step for e in r.episodes])
                success = np.array([e.success for e in r.episodes], dtype=float)
                smoothed = rolling_mean(success, PEAK_WINDOW)
                ax.plot(
                    steps[PEAK_WINDOW - 1 :], 100 * smoothed[PEAK_WINDOW - 1 :],
                    color=colour, linewidth=0.8, alpha=0.6,
                )  # fmt: skip
            for i, policy in enumerate(policies):
                # Runs with the same budget would hide each other's markers: spread them a little.
                slot = index * len(policies) + i - (len(runs) * len(policies) - 1) / 2
                x = float(np.mean([r.train_steps for r in results])) + slot * 0.012 * widest
                values = np.array([100 * r.evaluations[i].success_rate for r in results])
                mean = float(values.mean())
                ax.errorbar(
                    [x], [mean], yerr=[[mean - values.min()], [values.max() - mean]],
                    fmt=markers[policy], color=colour, markeredgecolor="black", capsize=3,
                )  # fmt: skip
        for policy in policies:  # legend entries of the marker shapes
            ax.plot(
                [], [], linestyle="none", marker=markers[policy], color="white", markeredgecolor="black",
                label=f"held-out {policy}: mean, min-max over seeds",
            )  # fmt: skip
        ax.axhline(PAPER_CNN_RL_SUCCESS[name], color="black", linestyle="--", label="paper CNN+RL (peak training)")
        if widest > config.total_steps:
            ax.axvline(config.total_steps, color="grey", linestyle=":", label="paper budget")
        ax.set_title(name + (" (text-only image)" if name == "NumberLine" and not config.number_line_drawing else ""))
        ax.set_xlabel("training env steps")
        ax.set_ylabel("success rate (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(games) :]:
        ax.axis("off")
    seeds = ", ".join(str(s) for s in config.seeds)
    fig.suptitle(
        f"CNN + RL baseline: PPO on pixels. Lines: success of the last {PEAK_WINDOW} training episodes, "
        f"one per seed ({seeds})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_results(config: CnnBaselineConfig) -> tuple[list[RunResult], str, str | None]:
    """The results of every job of ``config``, the command that trained them and the machine line of
    their report, read back from the
    ``cnn_rl_baseline.csv``, ``cnn_rl_baseline_curves.csv`` and ``.md`` files in ``config.out_dir``.

    Raises FileNotFoundError when the files are missing and ValueError when a job of ``config`` has
    no rows in them (the files come from a run with other flags).
    """
    out = config.out_dir
    paths = [out / f"{RESULT_NAME}.csv", out / f"{RESULT_NAME}_curves.csv", out / f"{RESULT_NAME}.md"]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"--report-only needs the files of a finished run; missing: {', '.join(missing)}")
    with open(paths[0], newline="") as handle:
        rows = list(csv.DictReader(handle))
    episodes: dict[tuple[str, str, int], list[TrainingEpisode]] = {}
    with open(paths[1], newline="") as handle:
        for row in csv.DictReader(handle):
            episodes.setdefault((row["env"], row["budget"], int(row["seed"])), []).append(
                TrainingEpisode(int(row["env_step"]), row["success"] == "1", float(row["return"]), int(row["length"]))
            )
    results = []
    for run, seed in config.jobs():
        mine = [r for r in rows if (r["env"], r["budget"], int(r["seed"])) == (run.game, run.label, seed)]
        by_policy = {r["eval_policy"]: r for r in mine}
        policies = EVAL_POLICIES[config.eval_policy]
        if not mine or any(p not in by_policy for p in policies):
            raise ValueError(
                f"{paths[0]} has no {'/'.join(policies)} rows for {run.game} ({run.label}), seed {seed}: it was "
                "written with other flags; pass the flags of the run that wrote it"
            )
        evaluations = [
            HeldOutEvaluation(
                policy,
                round(float(by_policy[policy]["success"]) * int(by_policy[policy]["eval_episodes"]) / 100),
                int(by_policy[policy]["eval_episodes"]),
                float(by_policy[policy]["eval_seconds"]),
            )
            for policy in policies
        ]
        first = by_policy[policies[0]]
        results.append(
            RunResult(
                run, seed, int(first["train_steps"]), float(first["train_seconds"]),
                episodes.get((run.game, run.label, seed), []), evaluations,
            )  # fmt: skip
        )
    report = paths[2].read_text(encoding="utf-8").splitlines()
    commands = [line for line in report if line.startswith("Command: `")]
    command = commands[-1][len("Command: `") : -1] if commands else "python -m benchmarks.cnn_rl_baseline"
    machines = [line.removesuffix(".") for line in report if line.startswith("Machine: ")]
    return results, command, machines[-1] if machines else None


def main(argv: list[str] | None = None) -> int:
    """Train and evaluate every (run, seed) job, write the result files after each, print one line per job."""
    config = parse_args(argv)
    command = " ".join(["python -m benchmarks.cnn_rl_baseline", *(sys.argv[1:] if argv is None else argv)])
    if config.report_only:
        results, command, machine = load_results(config)
        write_results(config, results, command, machine)
        print(f"rebuilt {config.out_dir / RESULT_NAME}.{{md,png}} from the CSV files of `{command}`")
        return 0
    try:
        import stable_baselines3  # noqa: F401
        import torch
        from tqdm import tqdm
    except ImportError as error:
        raise ImportError(
            f"the CNN baseline needs stable-baselines3, torch and tqdm ({error}); "
            'install them with `pip install "gym-cards-vlm[agent,bench]"`'
        ) from error

    torch.set_num_threads(1)  # jobs trained in this process (--workers 1) use one thread like the workers
    jobs = config.jobs()
    order = {job: index for index, job in enumerate(jobs)}
    results: list[RunResult] = []
    with tqdm(total=len(jobs), desc="runs x seeds", disable=not config.progress) as bar:
        for result in finished_jobs(config):
            results.append(result)
            results.sort(key=lambda r: order[(r.run, r.seed)])
            held_out = ", ".join(
                f"{e.policy} {100 * e.success_rate:.1f}% [{100 * e.interval[0]:.1f}, {100 * e.interval[1]:.1f}] "
                f"({e.seconds:.0f} s)"
                for e in result.evaluations
            )
            run = result.run
            tqdm.write(
                f"{run.game} ({run.budget}, lr {run.learning_rate:g}, seed {result.seed}): held-out {held_out}; "
                f"paper {PAPER_CNN_RL_SUCCESS[run.game]:.1f}; peak training {100 * result.peak_train_success:.1f}%; "
                f"{result.train_steps} steps in {result.train_seconds:.0f} s"
            )
            sys.stdout.flush()
            write_results(config, results, command)  # after every job, so a long run leaves partial results
            bar.update(1)
    print(f"wrote {config.out_dir / RESULT_NAME}.{{md,csv,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
