"""CNN + RL baseline: PPO with a convolutional policy on the pixels of each card game.

The paper's "CNN + RL" row (NumberLine 87.1, EZPoints 0, Points24 0, Blackjack 38.8 % success)
trains a CNN policy with PPO from the rendered frames, with the same environment-step budget as
the VLM runs (15000 steps for the card games). This script does the same with
stable-baselines3's PPO and its NatureCNN feature extractor on frames downscaled from 300x300 to
``--frame-size`` pixels, then evaluates the trained policy on held-out seeds (reset seeds that
no training environment used) and reports the success rate with a 95% Wilson interval. Actions
are sampled from the policy by default, as in the training episodes the paper's curves count;
``--eval-policy greedy`` (or ``both``) takes the most likely action instead, which can loop until
the time limit (expensive on EZPoints/Points24, whose limit is 300 steps).

Every game trains with the paper's budget (``--total-steps``, 15000). ``--longer-budgets`` names
games that also train a second time, from scratch with the same hyperparameters, for more steps:
by default NumberLine for 50000 steps, because on the published text-only NumberLine image
("Target: x" / "Current: y", no drawn number line) the CNN has only begun to read the two numbers
after 15000 steps. ``--number-line-drawing`` trains on NumberLine's drawn number line
(``show_number_line=True``) instead, which the paper's image did not have.

Writes ``benchmarks/results/cnn_rl_baseline.{md,csv,png}`` (table against the paper with the
budget of every run, learning curves of training episodes) and ``cnn_rl_baseline_curves.csv``
(every training episode of every run).

Usage (from the repository root)::

    python -m benchmarks.cnn_rl_baseline            # 4 games x 15000 steps + NumberLine x 50000
    python -m benchmarks.cnn_rl_baseline --envs NumberLine Blackjack --longer-budgets --eval-policy both --seed 1
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
from PIL import Image

from benchmarks.make_readme import RESULTS_DIR, machine_description
from vlm_agent.evaluation import held_out_seed, wilson_interval

if TYPE_CHECKING:  # stable-baselines3 (and torch) load only once training starts
    from stable_baselines3 import PPO

RESULT_NAME = "cnn_rl_baseline"
PAPER_CNN_RL_SUCCESS = {"NumberLine": 87.1, "EZPoints": 0.0, "Points24": 0.0, "Blackjack": 38.8}
"""Episode success rate (%) of the paper's CNN + RL baseline (Zhai et al. 2024, Table 1)."""
PEAK_WINDOW = 100
"""Training success is smoothed over the last PEAK_WINDOW episodes before taking its peak."""
EVAL_POLICIES = {"sampled": ("sampled",), "greedy": ("greedy",), "both": ("sampled", "greedy")}
"""``--eval-policy`` value -> the evaluation modes it runs."""
PAPER_BUDGET = 15000
"""Environment steps per card game in the paper's runs."""
LONGER_BUDGETS = {"NumberLine": 50000}
"""Default ``--longer-budgets``: games that also train for more steps than the paper's budget.

NumberLine because on its published text-only image the CNN is still learning to read the digits
after 15000 steps; the other games are at the paper's number (Blackjack) or at 0 like the paper
(EZPoints, Points24).
"""


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
    longer_budgets: dict[str, int] = field(
        default_factory=lambda: dict(LONGER_BUDGETS),
        metadata={
            "help": "games (among --envs) that also train from scratch for more steps, as GAME=STEPS; "
            "the flag with no value trains the paper budget only"
        },
    )
    number_line_drawing: bool = field(
        default=False,
        metadata={
            "help": "NumberLine frames also draw the number line, target flag and position marker "
            "(show_number_line=True); the paper's image has the two numbers as text only"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of training envs, network init and sampling"})
    n_envs: int = field(default=4, metadata={"help": "parallel training envs (one DummyVecEnv process)"})
    n_steps: int = field(default=128, metadata={"help": "rollout length per env per PPO update"})
    batch_size: int = field(default=128, metadata={"help": "PPO mini-batch size"})
    n_epochs: int = field(default=4, metadata={"help": "PPO epochs per update"})
    learning_rate: float = field(default=2.5e-4, metadata={"help": "Adam learning rate (constant)"})
    gamma: float = field(default=0.9, metadata={"help": "discount factor (paper's VLM runs: 0.9)"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda"})
    clip_range: float = field(default=0.1, metadata={"help": "PPO clip range"})
    ent_coef: float = field(default=0.01, metadata={"help": "entropy bonus coefficient"})
    frame_size: int = field(default=84, metadata={"help": "frames are downscaled to frame_size x frame_size RGB"})
    eval_episodes: int = field(default=1000, metadata={"help": "held-out evaluation episodes per game"})
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

    def __post_init__(self) -> None:
        unknown = [name for name in self.envs if name not in PAPER_CNN_RL_SUCCESS]
        if unknown or not self.envs:
            raise ValueError(f"--envs must name some of {list(PAPER_CNN_RL_SUCCESS)}, got {self.envs}")
        positive = ("total_steps", "n_envs", "n_steps", "batch_size", "n_epochs", "eval_episodes", "eval_envs")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
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

    def training_runs(self) -> list[tuple[str, str, int]]:
        """(game, budget name, env steps) of every training run, in order: the paper budget of each
        game in ``envs``, then its longer budget if it has one."""
        runs = []
        for name in self.envs:
            runs.append((name, "paper", self.total_steps))
            if name in self.longer_budgets:
                runs.append((name, "longer", self.longer_budgets[name]))
        return runs

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


def parse_args(argv: list[str] | None = None) -> CnnBaselineConfig:
    """Build :class:`CnnBaselineConfig` from the command line (one flag per field)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(CnnBaselineConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if f.name == "longer_budgets":
            shown = " ".join(f"{name}={steps}" for name, steps in default.items())
            help_text = f"{f.metadata['help']} (default: {shown})"
            parser.add_argument(
                flag, nargs="*", type=game_budget, default=list(default.items()), metavar="GAME=STEPS", help=help_text
            )
            continue
        help_text = f"{f.metadata['help']} (default: {default})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif f.name == "envs":
            parser.add_argument(flag, nargs="+", default=default, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str, "Path": Path}[str(f.type)]
            parser.add_argument(flag, type=kind, default=default, help=help_text)
    args = vars(parser.parse_args(argv))
    args["longer_budgets"] = dict(args["longer_budgets"])
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


def train(config: CnnBaselineConfig, name: str, total_steps: int) -> tuple[PPO, list[TrainingEpisode], float]:
    """Train PPO on one game for ``total_steps`` env steps; return the model, its training
    episodes and the wall time (s)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger
    from tqdm import tqdm

    class EpisodeRecorder(BaseCallback):
        """Collect every finished episode (Monitor puts it in ``info["episode"]``); tick a tqdm bar.

        tqdm rather than SB3's rich bar: it also writes readable progress into a nohup log.
        """

        def __init__(self) -> None:
            super().__init__()
            self.episodes: list[TrainingEpisode] = []
            self.bar = tqdm(total=total_steps, desc=f"train {name} ({total_steps})", disable=not config.progress)

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
        seed=config.seed,
        monitor_kwargs={"info_keywords": ("success",)},
    )
    model = PPO(
        "CnnPolicy",
        vec_env,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        n_epochs=config.n_epochs,
        learning_rate=config.learning_rate,
        gamma=config.gamma,
        gae_lambda=config.gae_lambda,
        clip_range=config.clip_range,
        ent_coef=config.ent_coef,
        seed=config.seed,
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


def evaluate(model: PPO, config: CnnBaselineConfig, name: str, policy: str) -> HeldOutEvaluation:
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
        obs, _ = env.reset(seed=held_out_seed(config.seed, next_episode))
        next_episode += 1
        observations.append(obs)
    successes = finished = 0
    start = time.perf_counter()
    with tqdm(total=config.eval_episodes, desc=f"eval {name} ({policy})", disable=not config.progress) as bar:
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
                    observations[i], _ = envs[i].reset(seed=held_out_seed(config.seed, next_episode))
                    next_episode += 1
                else:
                    observations[i] = None
    for env in envs:
        env.close()
    return HeldOutEvaluation(policy, successes, finished, time.perf_counter() - start)


@dataclass
class GameResult:
    """Outcome of one training run of one game: its budget, held-out success(es), training curve stats."""

    env: str
    budget: str
    train_steps: int
    train_episodes: int
    train_seconds: float
    peak_train_success: float
    evaluations: list[HeldOutEvaluation]


def peak_success(episodes: list[TrainingEpisode], window: int = PEAK_WINDOW) -> float:
    """Highest trailing-window success rate of training episodes, counted once a window is full.

    This is the paper's way of reporting (peak within the step budget); with fewer than
    ``window`` episodes it is the success rate of all of them.
    """
    if not episodes:
        return float("nan")
    success = np.array([e.success for e in episodes], dtype=float)
    if len(success) < window:
        return float(success.mean())
    return float(rolling_mean(success, window)[window - 1 :].max())


def write_results(
    config: CnnBaselineConfig, results: list[GameResult], curves: dict[str, list[TrainingEpisode]], command: str
) -> None:
    """Write ``cnn_rl_baseline.{md,csv,png}`` and ``cnn_rl_baseline_curves.csv`` into ``config.out_dir``.

    ``curves`` maps ``"<game>/<budget>"`` to the training episodes of that run; ``command`` is the
    command line that reproduces the results.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    header = [
        "env", "budget", "train_steps", "eval_policy", "paper_success", "success", "ci95_low", "ci95_high",
        "eval_episodes", "peak_train_success", "train_episodes", "train_seconds", "eval_seconds", "seed", "frame_size",
        "number_line_drawing",
    ]  # fmt: skip
    with open(out / f"{RESULT_NAME}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in results:
            for e in r.evaluations:
                low, high = e.interval
                writer.writerow([
                    r.env, r.budget, r.train_steps, e.policy, PAPER_CNN_RL_SUCCESS[r.env], f"{100 * e.success_rate:.2f}",
                    f"{100 * low:.2f}", f"{100 * high:.2f}", e.episodes, f"{100 * r.peak_train_success:.2f}",
                    r.train_episodes, f"{r.train_seconds:.1f}", f"{e.seconds:.1f}", config.seed, config.frame_size,
                    int(config.number_line_drawing),
                ])  # fmt: skip
    with open(out / f"{RESULT_NAME}_curves.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["env", "budget", "env_step", "success", "return", "length"])
        for run, episodes in curves.items():
            name, budget = run.split("/")
            for e in episodes:
                writer.writerow([name, budget, e.env_step, int(e.success), e.episode_return, e.length])

    policies = EVAL_POLICIES[config.eval_policy]
    eval_columns = "".join(f" held-out, {p} | 95% interval |" for p in policies)
    lines = [
        f"| game | budget | train steps | paper CNN+RL |{eval_columns} peak training success | train time |",
        "|---|---|---:|---:|" + "---:|---|" * len(policies) + "---:|---:|",
    ]
    for r in results:
        cells = ""
        for e in r.evaluations:
            low, high = e.interval
            cells += f" {100 * e.success_rate:.1f} | [{100 * low:.1f}, {100 * high:.1f}] |"
        lines.append(
            f"| {r.env} | {r.budget} | {r.train_steps} | {PAPER_CNN_RL_SUCCESS[r.env]:.1f} |{cells} "
            f"{100 * r.peak_train_success:.1f} | {r.train_seconds:.0f} s |"
        )
    episodes = results[0].evaluations[0].episodes
    lines += [
        "",
        (
            f"Success rate in % of {episodes} held-out episodes per run (reset seeds "
            f"{held_out_seed(config.seed, 0)}..{held_out_seed(config.seed, episodes - 1)}) with 95% Wilson intervals; "
            "'sampled' draws actions from the policy as in training, 'greedy' takes the most likely action. "
            f"Budget 'paper' is the paper's {PAPER_BUDGET} env steps per game (here --total-steps {config.total_steps}); "
            "'longer' is a separate run from scratch with the same hyperparameters and more steps. "
            f"Peak training success = best success rate over {PEAK_WINDOW} consecutive training episodes (the paper "
            f"reports the peak within the step budget). PPO (stable-baselines3, CnnPolicy/NatureCNN) on "
            f"{config.frame_size}x{config.frame_size} RGB frames, {config.n_envs} envs x {config.n_steps} steps per "
            f"update, {config.n_epochs} epochs, mini-batch {config.batch_size}, lr {config.learning_rate:g}, "
            f"gamma {config.gamma:g}, GAE lambda {config.gae_lambda:g}, clip {config.clip_range:g}, "
            f"entropy {config.ent_coef:g}, seed {config.seed}, one torch thread. Train steps are the budget rounded "
            "up to whole PPO updates."
        ),
        "",
        f"NumberLine image seen by the CNN: {config.number_line_image()}.",
        "",
        machine_description() + ".",
        "",
        f"Command: `{command}`",
    ]
    (out / f"{RESULT_NAME}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    games = list(dict.fromkeys(r.env for r in results))
    cols = min(2, len(games))
    rows = math.ceil(len(games) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.6 * rows), squeeze=False)
    markers = {"paper": "o", "longer": "s"}
    for ax, name in zip(axes.flat, games, strict=False):  # spare axes are switched off below
        runs = [r for r in results if r.env == name]
        for r in runs:
            episodes = curves[f"{r.env}/{r.budget}"]
            if len(episodes) >= PEAK_WINDOW:
                steps = np.array([e.env_step for e in episodes])
                success = np.array([e.success for e in episodes], dtype=float)
                smoothed = rolling_mean(success, PEAK_WINDOW)
                label = f"training, {r.budget} budget (last {PEAK_WINDOW} episodes)"
                ax.plot(steps[PEAK_WINDOW - 1 :], 100 * smoothed[PEAK_WINDOW - 1 :], label=label, alpha=0.8)
        ax.axhline(PAPER_CNN_RL_SUCCESS[name], color="black", linestyle="--", label="paper CNN+RL")
        if len(runs) > 1:
            ax.axvline(config.total_steps, color="grey", linestyle=":", label="paper budget")
        for r in runs:
            for e, colour in zip(r.evaluations, ("tab:red", "tab:purple"), strict=False):
                low, high = e.interval
                ax.errorbar(
                    [r.train_steps], [100 * e.success_rate],
                    yerr=[[100 * (e.success_rate - low)], [100 * (high - e.success_rate)]],
                    fmt=markers.get(r.budget, "o"), color=colour, capsize=4,
                    label=f"held-out, {e.policy}, {r.budget} budget (95% CI)",
                )  # fmt: skip
        ax.set_title(name + (" (text-only image)" if name == "NumberLine" and not config.number_line_drawing else ""))
        ax.set_xlabel("training env steps")
        ax.set_ylabel("success rate (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(games) :]:
        ax.axis("off")
    fig.suptitle("CNN + RL baseline: PPO on pixels", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / f"{RESULT_NAME}.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Train and evaluate every requested game, write the result files, print the table."""
    config = parse_args(argv)
    command = " ".join(["python -m benchmarks.cnn_rl_baseline", *(sys.argv[1:] if argv is None else argv)])
    try:
        import stable_baselines3  # noqa: F401
        import torch
    except ImportError as error:
        raise ImportError(
            f"the CNN baseline needs stable-baselines3 and torch ({error}); "
            'install them with `pip install "gym-cards-vlm[agent,bench]"`'
        ) from error

    torch.set_num_threads(1)  # 2 shared cores: more threads slow everyone down
    results: list[GameResult] = []
    curves: dict[str, list[TrainingEpisode]] = {}
    for name, budget, total_steps in config.training_runs():
        model, episodes, train_seconds = train(config, name, total_steps)
        evaluations = [evaluate(model, config, name, policy) for policy in EVAL_POLICIES[config.eval_policy]]
        curves[f"{name}/{budget}"] = episodes
        result = GameResult(
            env=name,
            budget=budget,
            train_steps=int(model.num_timesteps),
            train_episodes=len(episodes),
            train_seconds=train_seconds,
            peak_train_success=peak_success(episodes),
            evaluations=evaluations,
        )
        results.append(result)
        held_out = ", ".join(
            f"{e.policy} {100 * e.success_rate:.1f}% [{100 * e.interval[0]:.1f}, {100 * e.interval[1]:.1f}] "
            f"({e.seconds:.0f} s)"
            for e in evaluations
        )
        print(
            f"{name} ({budget} budget): held-out {held_out}; paper {PAPER_CNN_RL_SUCCESS[name]:.1f}; peak training "
            f"{100 * result.peak_train_success:.1f}%; {result.train_steps} steps in {train_seconds:.0f} s",
            flush=True,
        )
        write_results(config, results, curves, command)  # after every run, so a long run leaves partial results
    print(f"wrote {config.out_dir / RESULT_NAME}.{{md,csv,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
