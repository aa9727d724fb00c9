"""The ALFWorld rows of `benchmarks/ppo_learning.py --alfworld`: does PPO learn ALFWorld, and does the
prompt's memory of earlier steps (`history_steps` K) matter?

For each K of `--history-steps` (default 0 and 2): a tiny `qwen2_vl` model (random weights) is
warm-started by SFT on alfworld's expert on the train games (a share of deliberately wrong labels;
each prompt recalls the last K steps, as in training), evaluated, trained by PPO on the train
games, and evaluated again. Success and goal-condition rate with 95% intervals, and the share of
unusable answers, on the train games and on the held-out `valid_unseen` games. The answer's
action is an admissible command as text (the task, as in the paper); an unusable answer is
played by `--invalid-action` (default `nothing`: the paper's "nothing happens, reward -1").

`--alfworld-data-path DIR` trains on other train games (e.g. many made by `gym-cards
alfworld-generate --split train`): the SFT, PPO and the train-game evaluation play them, the held-out
evaluation still plays the shipped valid_unseen games. Every row is written to
`benchmarks/results/ppo_learning_alfworld.csv` (a run replaces the rows of its own train games and K
and keeps the others), and the Markdown next to it is generated from the CSV alone: the
tables, the targets' verdicts and the commands that made the rows.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ALFWORLD = "gym_cards/ALFWorld-v0"
SPLITS = (("train", "train games"), ("eval", "held-out games (valid_unseen)"))
#: The issue's targets (checked in the Markdown, never assumed).
MAX_UNUSABLE_AFTER = 0.20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alfworld-task-types", nargs="*", default=None,
                        help="ALFWorld task types to train and evaluate on (default: all six).")
    parser.add_argument("--alfworld-max-steps", type=int, default=50, help="ALFWorld episode step limit.")
    parser.add_argument("--history-steps", type=int, nargs="+", default=[0, 2],
                        help="ALFWorld rows: the K values of the prompt's memory to run (one warm start and PPO run each).")
    parser.add_argument("--invalid-action", default="nothing", choices=("nothing", "penalty"),
                        help="ALFWorld rows: what an unusable answer does ('nothing': the paper's rule).")
    parser.add_argument("--alfworld-ppo-lr", type=float, default=5e-5, help="ALFWorld rows: PPO learning rate.")
    parser.add_argument("--alfworld-sft-epochs", type=float, default=None,
                        help="ALFWorld rows: SFT epochs (default --sft-epochs).")
    parser.add_argument("--alfworld-data-path", type=Path, default=None,
                        help="ALFWorld rows: folder of the train games (the env's data_path, e.g. made by "
                             "`gym-cards alfworld-generate --split train`) for the SFT, PPO and the train-game "
                             "evaluation (default: the shipped games). The held-out evaluation always plays the "
                             "shipped valid_unseen games.")


def stem(args: argparse.Namespace) -> str:
    return "ppo_learning_alfworld_quick" if args.quick else "ppo_learning_alfworld"


def env_kwargs(args: argparse.Namespace, split: str) -> dict[str, Any]:
    """The env options of a split: `--alfworld-data-path` (if given) chooses the train games only."""
    kwargs: dict[str, Any] = {"split": split, "max_episode_steps": args.alfworld_max_steps}
    if args.alfworld_task_types:
        kwargs["task_types"] = list(args.alfworld_task_types)
    if split == "train" and args.alfworld_data_path is not None:
        kwargs["data_path"] = str(args.alfworld_data_path)
    return kwargs


def train_games(args: argparse.Namespace) -> tuple[str, int]:
    """The train games' folder label ('shipped' or the given path) and how many games of the task types it holds.

    A `--alfworld-data-path` without playable train games exits with one line.
    """
    from gym_cards.alfworld.env import collect_game_files, resolve_games_root
    from gym_cards.alfworld.tasks import resolve_task_types

    data_path = None if args.alfworld_data_path is None else str(args.alfworld_data_path)
    try:
        root = resolve_games_root(data_path, "train")
        games = collect_game_files(root, resolve_task_types(args.alfworld_task_types or None))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: --alfworld-data-path: {error}") from None
    if not games:
        raise SystemExit(f"error: --alfworld-data-path: no train games of types {args.alfworld_task_types or 'all'} "
                         f"under {root!r}.")
    return ("shipped" if data_path is None else data_path), len(games)


def _data_label(row: dict[str, Any]) -> str:
    """The train games of a row (rows written before `data_path` was recorded played the shipped games)."""
    return row.get("data_path") or "shipped"


def _data_tag(args: argparse.Namespace) -> str:
    """A file-name tag of the train games folder ('' for the shipped games)."""
    if args.alfworld_data_path is None:
        return ""
    return "__data-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in str(args.alfworld_data_path).strip("/"))


def evaluate(policy: Any, args: argparse.Namespace, split: str, history_steps: int) -> dict[str, float]:
    """Success, goal-condition rate and unusable answers of `policy` on `args.eval_episodes` episodes of a split.

    Played by the one loop (`AgentLoop` with `HeldOutEpisodes`): episode i resets with
    `held_out_seed(seed, i)`, which draws its game from the split; answers are sampled at the
    policy's temperature, with the training prompt (memory of K steps) and invalid-answer rule.
    """
    import numpy as np

    from vlm_agent.agents.local_hf import LocalHFAgent
    from vlm_agent.evaluation.statistics import Z_95, wilson_interval
    from vlm_agent.prompting.env_prompts import prompt_for
    from vlm_agent.prompting.invalid_actions import InvalidActionPolicy
    from vlm_agent.rollout.loop import AgentLoop, HeldOutEpisodes, make_env

    width = min(16, args.eval_episodes)
    envs = [make_env(ALFWORLD, env_kwargs(args, split)) for _ in range(width)]
    loop = AgentLoop(envs, prompt_for(ALFWORLD, cot=False, history_steps=history_steps),
                     InvalidActionPolicy(mode=args.invalid_action, fallback=0, penalty=1.0),
                     HeldOutEpisodes(args.eval_episodes, args.seed))
    agent = LocalHFAgent(policy.eval(), name=f"ALFWorld {split}", seed=args.seed)
    won: dict[int, bool] = {}
    goal: dict[int, float] = {}
    steps = invalid_steps = 0
    try:
        while loop.active:
            for step in loop.step(agent):
                if step.episode is None:
                    continue
                won[step.episode.episode] = bool(step.info["won"])  # the episode's last step info
                goal[step.episode.episode] = float(step.info["goal_condition_success_rate"])
                steps += step.episode.length
                invalid_steps += step.episode.invalid_steps
    finally:
        loop.close()
    n = len(won)
    wins = sum(won.values())
    low, high = wilson_interval(wins, n)
    goals = np.array([goal[episode] for episode in sorted(goal)])
    mean_goal = float(np.mean(goals))
    half = Z_95 * float(np.std(goals, ddof=1)) / n**0.5 if n > 1 else 0.0  # normal interval of a mean in [0, 1]
    return {
        "success": wins / n, "success_low": low, "success_high": high,
        "goal": mean_goal, "goal_low": max(0.0, mean_goal - half), "goal_high": min(1.0, mean_goal + half),
        "invalid": invalid_steps / max(steps, 1), "episodes": n, "steps": steps,
    }


def warm_start(args: argparse.Namespace, history_steps: int) -> tuple[Path, float]:
    """The SFT warm start for memory K (cached in the work dir under a name holding its settings)."""
    from vlm_agent.demo.tiny_models import make_tiny_model_for_env
    from vlm_agent.training.sft import VLMSFTConfig, run_sft

    epochs = args.alfworld_sft_epochs if args.alfworld_sft_epochs is not None else args.sft_epochs
    types = "-".join(args.alfworld_task_types or ["all"])
    name = (f"ALFWorld__action_only__vocab__K{history_steps}__{types}__max{args.alfworld_max_steps}__demos{args.sft_demos}"
            f"_ep{epochs:g}_lr{args.sft_lr:g}_wrong{args.wrong_action_rate:g}_seed{args.seed}{_data_tag(args)}")
    out = args.work_dir / name
    if (out / "sft_summary.json").is_file():
        return out, 0.0
    started = time.perf_counter()
    # The tokenizer knows ALFWorld's object and receptacle names as whole tokens (env_vocabulary_corpus).
    tiny = make_tiny_model_for_env(args.arch, args.work_dir / "tiny_random_model_alfworld", ALFWORLD, seed=args.seed)
    run_sft(VLMSFTConfig(
        model_name_or_path=str(tiny), env_id=ALFWORLD, env_kwargs=env_kwargs(args, "train"),
        num_demos=args.sft_demos, epochs=epochs, learning_rate=args.sft_lr, wrong_action_rate=args.wrong_action_rate,
        use_cot=False, history_steps=history_steps, seed=args.seed, output_dir=str(out), progress_bar=False,
    ))
    return out, time.perf_counter() - started


def run_one(args: argparse.Namespace, history_steps: int, games: tuple[str, int],
            max_new_tokens: int = 24) -> tuple[list[dict], list[dict]]:
    """Warm start, evaluate, PPO, evaluate, for memory K = `history_steps` on the train games `games`
    (:func:`train_games`): one row per split and the curve."""
    from vlm_agent.models.loading import ModelSettings
    from vlm_agent.models.policy import VLMPolicy
    from vlm_agent.models.settings import GenerationSettings
    from vlm_agent.training.ppo_config import VLMPPOConfig
    from vlm_agent.training.ppo_trainer import VLMPPOTrainer

    data_label, num_train_games = games
    warm_dir, sft_seconds = warm_start(args, history_steps)
    summary = json.loads((warm_dir / "sft_summary.json").read_text())
    settings = GenerationSettings(temperature=0.2, max_new_tokens=max_new_tokens, cot_scale=0.2)
    warm = VLMPolicy.from_model(ModelSettings(str(warm_dir), use_lora=False, device="cpu"), settings, seed=args.seed)
    before = {split: evaluate(warm, args, split, history_steps) for split, _ in SPLITS}
    print(json.dumps({"history_steps": history_steps, "before": before, "sft_seconds": sft_seconds}), flush=True)
    del warm
    config = VLMPPOConfig(
        model_name_or_path=str(warm_dir), device="cpu", env_id=ALFWORLD, env_kwargs=env_kwargs(args, "train"),
        seed=args.seed, use_cot=False, history_steps=history_steps, cot_scale=0.2, temperature=0.2,
        max_new_tokens=max_new_tokens, invalid_action=args.invalid_action, invalid_action_penalty=1.0,
        num_envs=args.num_envs, num_steps=args.num_steps, total_timesteps=args.ppo_steps, gamma=0.9, gae_lambda=0.95,
        clip_range=0.2, clip_range_value=0.2, ppo_epochs=2,
        mini_batch_size=8 if args.num_envs * args.num_steps % 8 == 0 else 1, gradient_accumulation_steps=1,
        learning_rate=args.alfworld_ppo_lr, min_learning_rate=args.alfworld_ppo_lr / 10, max_grad_norm=1.0,
        value_head_learning_rate=1e-3, use_lora=False, save_every=1000,
        output_dir=str(args.work_dir / f"ppo__{warm_dir.name}"), progress_bar=False,  # one per warm start
        log_samples=2,
    )
    ppo_started = time.perf_counter()
    trainer = VLMPPOTrainer(config)
    trainer.train()
    ppo_seconds = time.perf_counter() - ppo_started
    after = {split: evaluate(trainer.policy, args, split, history_steps) for split, _ in SPLITS}
    command = "python -m benchmarks.ppo_learning " + shlex.join(sys.argv[1:])
    rows = []
    for split, games in SPLITS:
        rows.append({
            "history_steps": history_steps, "split": split, "games": games,
            "data_path": data_label,  # the run's train games (held-out games: always the shipped valid_unseen)
            "train_games": num_train_games,
            "task_types": " ".join(args.alfworld_task_types or ["all"]), "max_episode_steps": args.alfworld_max_steps,
            "invalid_action": args.invalid_action, "wrong_action_rate": args.wrong_action_rate,
            "sft_demos": summary["num_demos"], "sft_epochs": summary["config"]["epochs"],
            "sft_last_loss": summary["losses"][-1] if summary["losses"] else "",
            "ppo_env_steps": trainer.global_step, "ppo_updates": trainer.update, "ppo_lr": args.alfworld_ppo_lr,
            **{f"before_{k}": v for k, v in before[split].items()}, **{f"after_{k}": v for k, v in after[split].items()},
            "sft_seconds": round(sft_seconds, 1), "ppo_seconds": round(ppo_seconds, 1), "command": command,
        })
        print(json.dumps(rows[-1]), flush=True)
    curve = [{"history_steps": history_steps, "data_path": data_label, "update": m["update"], "global_step": m["global_step"],
              "success_rate": m["charts/success_rate"], "invalid_action_rate": m["charts/invalid_action_rate"],
              "episode_return": m["charts/episode_return"]} for m in trainer.history]
    return rows, curve


def run_alfworld(args: argparse.Namespace) -> int:
    """Run the rows of every K in `args.history_steps`, keep the CSV rows of other K values, write the Markdown."""
    import torch

    torch.set_num_threads(1)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, curves_path = args.out_dir / f"{stem(args)}.csv", args.out_dir / f"{stem(args)}_curves.csv"
    games = train_games(args)  # a bad --alfworld-data-path stops here, before any training
    for history_steps in args.history_steps:
        rows, curve = run_one(args, history_steps, games)
        with open(args.work_dir / f".{stem(args)}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # runs of other K values may write the same files at the same time
            _merge(args, csv_path, curves_path, history_steps, games[0], rows, curve)
    return 0


def _key(row: dict[str, Any]) -> tuple[str, int]:
    """Rows and curves are one run's per (train games, K); the shipped games' runs come first."""
    label = _data_label(row)
    return ("" if label == "shipped" else label), int(float(row["history_steps"]))


def _merge(args: argparse.Namespace, csv_path: Path, curves_path: Path, history_steps: int, data_label: str,
           rows: list[dict[str, Any]], curve: list[dict[str, Any]]) -> None:
    """Replace the rows and curve of (train games, K) in the CSVs (keeping the others) and rewrite the Markdown."""
    key = _key({"data_path": data_label, "history_steps": history_steps})
    old_rows = [r for r in read_csv(csv_path) if _key(r) != key]
    old_curve = [c for c in read_csv(curves_path) if _key(c) != key]
    write_csv(csv_path, sorted(old_rows + rows, key=lambda r: _key(r)))
    write_csv(curves_path, sorted(old_curve + curve, key=_key))
    write_markdown(args.out_dir / f"{stem(args)}.md", read_csv(csv_path), read_csv(curves_path))


def read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in rows for key in row)), restval="")
        writer.writeheader()
        writer.writerows(rows)


def _pct(row: dict[str, Any], key: str) -> str:
    value, low, high = (100 * float(row[key + suffix]) for suffix in ("", "_low", "_high"))
    return f"{value:.1f} [{low:.1f}, {high:.1f}]"


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, checked on the rows (each line says yes or no and the numbers)."""
    lines = []
    by = {(*_key(r), r["split"]): r for r in rows}
    for data, k in sorted({key[:2] for key in by}):
        train, held = by.get((data, k, "train")), by.get((data, k, "eval"))
        if train is None or held is None:
            continue
        separated = float(train["after_success_low"]) > float(train["before_success_high"])
        lines.append(
            f"- K = {k}{_games_note(train)}: train-game success after PPO above the warm start with non-overlapping 95% intervals: "
            f"**{'yes' if separated else 'no'}** ({_pct(train, 'before_success')} -> {_pct(train, 'after_success')}); "
            f"held-out success above 0: **{'yes' if float(held['after_success']) > 0 else 'no'}** "
            f"({_pct(held, 'after_success')}); unusable answers after PPO below {100 * MAX_UNUSABLE_AFTER:.0f}%: "
            f"**{'yes' if max(float(train['after_invalid']), float(held['after_invalid'])) < MAX_UNUSABLE_AFTER else 'no'}** "
            f"({100 * float(train['after_invalid']):.1f}% train, {100 * float(held['after_invalid']):.1f}% held-out)."
        )
    for data in sorted({key[0] for key in by}):
        ks = sorted({key[1] for key in by if key[0] == data})
        for k in (k for k in ks if k > 0 and 0 in ks):
            for split, games in SPLITS:
                a, b = by.get((data, 0, split)), by.get((data, k, split))
                if a is None or b is None:
                    continue
                apart = (float(b["after_success_low"]) > float(a["after_success_high"])
                         or float(a["after_success_low"]) > float(b["after_success_high"]))
                lines.append(
                    f"- History, {games}{_games_note(a)}: K = {k} {_pct(b, 'after_success')} vs K = 0 {_pct(a, 'after_success')} success "
                    f"after PPO; goal-condition {_pct(b, 'after_goal')} vs {_pct(a, 'after_goal')}: "
                    f"{'the success intervals do not overlap' if apart else 'the success intervals overlap (no measurable difference)'}."
                )
    return lines


def _train_games_cell(row: dict[str, Any]) -> str:
    """'shipped' or 'FOLDER (N games)': the train games of a row's run."""
    count = row.get("train_games")
    return _data_label(row) + (f" ({int(float(count))} games)" if count not in (None, "") else "")


def _games_note(row: dict[str, Any]) -> str:
    """'' for a run on the shipped train games, else ', train games FOLDER (N games)'."""
    return "" if _data_label(row) == "shipped" else f", train games {_train_games_cell(row)}"


def write_markdown(path: Path, rows: list[dict[str, Any]], curves: list[dict[str, Any]]) -> None:
    """The results page, generated from the CSV rows alone."""
    lines = [
        "# PPO learning on ALFWorld with a tiny model (CPU)",
        "",
        "Written by `benchmarks/ppo_learning.py --alfworld` (`benchmarks/ppo_learning_alfworld.py`) from "
        f"`{path.with_suffix('.csv').name}`; nothing here is written by hand.",
        "",
        "Tiny `qwen2_vl` model (random weights, ~1.3M parameters), warm-started by SFT on alfworld's expert "
        "on the train games (a share of the labels deliberately wrong), then PPO on the train games. Answers "
        "are action-only JSON whose action must be an admissible command as text; K is the prompt's memory "
        "(`--history_steps`: the last K steps' text observation and executed action). Success and "
        "goal-condition rate in % with 95% intervals (Wilson; normal for the mean goal-condition rate), "
        "sampled at T = 0.2; 'unusable' is the share of steps whose answer named no admissible command.",
        "",
        "'Train games' is the folder of the games the run's SFT and PPO used (`--alfworld-data-path`; 'shipped': "
        "the package's games); the held-out games are always the shipped valid_unseen games.",
        "",
        "| K | train games | games | success: warm start | success: after PPO | goal-condition: warm start | goal-condition: after PPO | unusable: warm start -> after | episodes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {int(float(row['history_steps']))} | {_train_games_cell(row)} | {row['games']} | {_pct(row, 'before_success')} | "
            f"{_pct(row, 'after_success')} | {_pct(row, 'before_goal')} | {_pct(row, 'after_goal')} | "
            f"{100 * float(row['before_invalid']):.1f}% -> {100 * float(row['after_invalid']):.1f}% | "
            f"{int(float(row['after_episodes']))} |"
        )
    lines += ["", "## Targets", "", *verdicts(rows), "", "## Settings and cost of each run", "",
              "| K | train games | task types | max steps | unusable-answer rule | wrong labels | SFT demos x epochs (last loss) | PPO env steps (updates, lr) | SFT minutes | PPO minutes |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["split"] != "train":
            continue
        loss = f"{float(row['sft_last_loss']):.3f}" if row["sft_last_loss"] not in ("", None) else "-"
        sft_minutes = f"{float(row['sft_seconds']) / 60:.1f}" if float(row["sft_seconds"]) else "cached"
        lines.append(
            f"| {int(float(row['history_steps']))} | {_train_games_cell(row)} | {row['task_types']} | {row['max_episode_steps']} | "
            f"{row['invalid_action']} | {100 * float(row['wrong_action_rate']):.0f}% | {row['sft_demos']} x "
            f"{float(row['sft_epochs']):g} ({loss}) | {row['ppo_env_steps']} ({row['ppo_updates']}, {row['ppo_lr']}) | "
            f"{sft_minutes} | {float(row['ppo_seconds']) / 60:.1f} |"
        )
    lines += ["", "Training curve (success and unusable answers of the training episodes, per update):", ""]
    for data, k in sorted({_key(c) for c in curves}):
        points = [c for c in curves if _key(c) == (data, k)]
        note = f" (train games {data})" if data else ""
        lines.append(f"- K = {k}{note}: " + ", ".join(
            f"{c['update']}: {float(c['success_rate']):.2f} / {float(c['invalid_action_rate']):.2f}" for c in points))
    lines += ["", "Commands:", ""]
    for command in dict.fromkeys(row["command"] for row in rows):
        lines.append(f"- `{command}`")
    lines.append("")
    lines.append("Minutes depend on what else ran on the 2 shared CPU cores.")
    path.write_text("\n".join(lines) + "\n")
