"""PPO, GRPO, RLOO and GiGPO side by side on the card games, at equal environment-step budgets.

On CPU with the tiny offline model (random weights, warm-started as in benchmarks/ppo_learning.py):
every algorithm starts from the same SFT warm start of its setting and trains for the same number
of environment steps, at 3 seeds. Settings:

- ``numberline_image``: NumberLine from the image alone (the aligned tiny model, its language layers
  trained: ``language_only``), CoT, lambda 0.5.
- ``ezpoints_text``: EZPoints with the state also given as text (the tiny model is not taught to
  read EZPoints' cards from the image; see benchmarks/README.md, "Reading the image"), CoT, lambda 0.5.
- ``ezpoints_text_6k``: the same, from the same warm start, at 6144 environment steps instead of
  2048 (at 2048 the best algorithm, PPO, gained 11 points at seed 0).

Each setting has its own budget (``Setting.env_steps``; ``--env-steps`` sets every setting's);
within a setting every algorithm gets the same.

PPO collects 16 envs x 16 steps per update; the critic-free algorithms play rounds of 16 groups x 4
episodes (the G episodes of a group start from the same state), each round until its episodes end,
and stop when they have taken as many environment steps as PPO. Every run is a subprocess, so that
its peak memory (``VmHWM``) is its own. Held-out success (seeds 10^9 + ...) of the warm start and of
each trained policy, with Wilson 95% intervals; the learning curve is the success of training
episodes against environment steps, averaged over seeds (band: min-max).

What the critic-free algorithms need from the warm start: episodes of a group that differ. Their
signal comes only from groups whose returns are not all equal (``informative_share`` in the
results). Sampling at T=0.2 makes a confident warm start's G episodes alike. Earlier rows of this
benchmark (``git log`` of its results) came from a 12-epoch warm start of an older alignment that
won 68%; from it GRPO and RLOO did not learn (-2.2 and -9.8 points at 3 seeds, GiGPO +7.1, with 2 or
4 groups of 8 no better; their groups' informative share was not measured then). Since issue 28's
alignment the 12-epoch warm start wins every training episode (GRPO: 0% informative steps in 10
rounds), so it leaves nothing to learn. The 6-epoch warm start used now (``--sft-epochs 6``) is less
sure of its moves, its groups differ (98-100% informative steps in the first rounds), and every
algorithm learns. Hotter sampling is not the way here: at T=1.0 every answer of that warm start was
unusable in the first round (``--temperature`` sets the training rollouts' temperature; held-out
episodes always sample at 0.2).

Writes ``benchmarks/results/algorithms.{md,csv,png}`` and ``algorithms_curves.csv``; rows are
written as runs finish (a rerun of a setting replaces its rows).

    python -m benchmarks.algorithms                       # every setting, 4 algorithms x 3 seeds
    python -m benchmarks.algorithms --settings numberline_image --seeds 0
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "results"
ALGORITHMS = ("ppo", "grpo", "rloo", "gigpo")
EVAL_TEMPERATURE = 0.2  # held-out episodes sample at the paper's temperature, whatever the training rollouts used


@dataclass(frozen=True)
class Setting:
    name: str
    env_id: str
    show_state: bool
    label: str
    sft_epochs: float  # of its warm start (``--sft-epochs`` overrides it for every setting)
    env_steps: int = 2048  # the budget of each of its runs (``--env-steps`` overrides it for every setting)


SETTINGS = {
    "numberline_image": Setting("numberline_image", "gym_cards/NumberLine-v0", False, "NumberLine, image only",
                                 6.0),
    "ezpoints_text": Setting("ezpoints_text", "gym_cards/EZPoints-v0", True, "EZPoints, state as text + image",
                              12.0),
    # The same warm start, three times the budget: at 2048 steps no algorithm reached +25 points.
    "ezpoints_text_6k": Setting("ezpoints_text_6k", "gym_cards/EZPoints-v0", True,
                                 "EZPoints, state as text + image, 6144 env steps", 12.0, 6144),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--algorithms", nargs="*", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--warm-start-seed", type=int, default=1, help="Seed of the shared warm starts (ppo_learning's).")
    parser.add_argument("--env-steps", type=int, default=None,
                        help="Environment steps of every run (default: the setting's own, 2048; 6144 for ezpoints_text_6k).")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--num-steps", type=int, default=16, help="PPO: steps per env per update; others: round cap.")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--groups", type=int, default=16,
                        help="Critic-free algorithms: groups per round (each round plays groups x group-size episodes).")
    parser.add_argument("--loss-aggregation", default="step", choices=["step", "episode"],
                        help="Critic-free algorithms: each step alike or each episode alike (see vlm_agent.algorithms.group).")
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="Peak learning rate of every run.")
    parser.add_argument("--temperature", type=float, default=0.2,
                        help="Sampling temperature of the training rollouts (held-out episodes always sample at 0.2).")
    parser.add_argument("--eval-episodes", type=int, default=150)
    parser.add_argument("--sft-demos", type=int, default=512)
    parser.add_argument("--sft-epochs", type=float, default=None,
                        help="SFT epochs of every setting's warm start (default: the setting's own, 6 for NumberLine, "
                             "12 for EZPoints).")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes: every stage in a few minutes.")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/algorithms"))
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--report-only", action="store_true", help="Rebuild the Markdown and PNG from the CSVs.")
    parser.add_argument("--add-controls", action="store_true",
                        help="Fill the blank-image and other-state controls of image-only rows that lack them, from "
                             "each run's saved policy in --work-dir, and missing curves from its metrics.jsonl; "
                             "then rebuild the report.")
    parser.add_argument("--resume", action="store_true",
                        help="Keep the rows already written and run only the missing (setting, algorithm, seed) runs.")
    parser.add_argument("--run-one", nargs=3, metavar=("SETTING", "ALGORITHM", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sft_demos, args.sft_epochs, args.env_steps = 32, 1.0, 32
        args.num_envs, args.num_steps, args.group_size, args.groups, args.eval_episodes = 4, 4, 2, 2, 8
    return args


def warm_start_args(args: argparse.Namespace, setting: Setting) -> argparse.Namespace:
    """The arguments benchmarks/ppo_learning.py's warm starts take (its cache is shared)."""
    from benchmarks import ppo_learning

    shared = ppo_learning.parse_args(["--quick"] if args.quick else [])
    shared.seed = args.warm_start_seed
    shared.sft_demos = args.sft_demos
    shared.sft_epochs = setting.sft_epochs if args.sft_epochs is None else args.sft_epochs
    shared.eval_episodes = args.eval_episodes
    shared.work_dir = Path("runs/ppo_learning")
    return shared


def config_for(args: argparse.Namespace, setting: Setting, algorithm: str, seed: int, model_dir: Path, run_dir: Path):
    from vlm_agent.training.ppo_config import VLMPPOConfig

    num_envs = args.num_envs if algorithm == "ppo" else args.groups * args.group_size
    env_steps = setting.env_steps if args.env_steps is None else args.env_steps
    return VLMPPOConfig(
        model_name_or_path=str(model_dir), device="cpu", env_id=setting.env_id, seed=seed, algorithm=algorithm,
        group_size=args.group_size, use_cot=True, show_state=setting.show_state, cot_scale=0.5, temperature=args.temperature,
        max_new_tokens=64, num_envs=num_envs, num_steps=args.num_steps, total_timesteps=env_steps,
        gamma=0.9, gae_lambda=0.95, clip_range=0.2, clip_range_value=0.2, ppo_epochs=2,
        mini_batch_size=16 if num_envs * args.num_steps % 16 == 0 else 4, gradient_accumulation_steps=1,
        learning_rate=args.learning_rate, min_learning_rate=args.learning_rate / 10, max_grad_norm=1.0, value_head_learning_rate=1e-3,
        loss_aggregation=args.loss_aggregation, use_lora=False, language_only=not setting.show_state, save_every=1000, output_dir=str(run_dir),
        progress_bar=False, log_samples=0,
    )


def evaluate(policy: Any, args: argparse.Namespace, setting: Setting, label: str, control: str | None = None) -> Any:
    """Held-out episodes of ``policy``; ``control="blank"`` shows it frames of the background colour,
    ``"other state"`` the image of another state (frames of held-out read-out states), same prompts."""
    from vlm_agent.agents.blank import BlankImages, OtherStateImages
    from vlm_agent.agents.local_hf import LocalHFAgent
    from vlm_agent.demo.readout import held_out_examples

    if policy.settings.temperature != EVAL_TEMPERATURE:  # a run trained at another --temperature
        policy.settings = replace(policy.settings, temperature=EVAL_TEMPERATURE)
    agent = LocalHFAgent(policy.eval(), name=label, seed=0)
    if control == "blank":
        agent = BlankImages(agent)
    elif control == "other state":
        frames = held_out_examples(setting.env_id, 64, seed=1)
        agent = OtherStateImages(agent, [example.image for example in frames], seed=0)
    return play(agent, args, setting)


def play(agent: Any, args: argparse.Namespace, setting: Setting) -> Any:
    """``agent`` on the setting's held-out episodes (the same seeds for every row)."""
    from vlm_agent.evaluation.evaluate import evaluate_agent

    return evaluate_agent(agent, setting.env_id, episodes=args.eval_episodes, seed=0, cot=True,
                          num_envs=min(16, args.eval_episodes), show_state=setting.show_state, progress=False)


def control_values(policy: Any, args: argparse.Namespace, setting: Setting, label: str) -> dict[str, Any]:
    """The image-only controls of a trained policy: held-out success shown blank frames and shown
    another state's frame (empty for a setting that gives the state as text)."""
    if setting.show_state:
        return {"blank_success": "", "other_success": ""}
    return {"blank_success": evaluate(policy, args, setting, label, "blank").success_rate,
            "other_success": evaluate(policy, args, setting, label, "other state").success_rate}


def add_controls(args: argparse.Namespace, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trained image-only rows that lack controls, with them filled from each run's saved policy."""
    import torch

    from vlm_agent.models.policy import VLMPolicy

    torch.set_num_threads(1)
    filled = []
    for row in rows:
        setting = SETTINGS[row["setting"]]
        if row["algorithm"] not in ALGORITHMS or setting.show_state or row.get("blank_success") not in ("", None):
            continue
        policy_dir = run_folder(args.work_dir, setting.name, row["algorithm"], row["seed"]) / "policy"
        if not policy_dir.is_dir():
            print(f"[algorithms] no saved policy for {row['algorithm']} seed {row['seed']} in {policy_dir}", flush=True)
            continue
        print(f"[algorithms] controls of {setting.label}: {row['algorithm']} seed {row['seed']}", flush=True)
        policy = VLMPolicy.from_pretrained(policy_dir, device="cpu", is_trainable=False)
        filled.append({**row, **control_values(policy, args, setting, row["algorithm"])})
    return filled


def run_folder(work_dir: Path, setting: str, algorithm: str, seed: Any) -> Path:
    """The run folder of one (setting, algorithm, seed) training under ``--work-dir``."""
    return work_dir / f"{setting}__{algorithm}__{seed}"


def row_key(row: dict[str, Any]) -> tuple[str, str, str]:
    """A row's (or curve point's) identity in the results files: setting, algorithm and seed."""
    return str(row["setting"]), str(row["algorithm"]), str(row["seed"])


def missing_curve(args: argparse.Namespace, row: dict[str, Any], curves: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trained row's curve points read back from its run's ``metrics.jsonl`` when the curves file
    has none for it (else none: the file's points stay)."""
    if any(row_key(point) == row_key(row) for point in curves):
        return []
    metrics = run_folder(args.work_dir, row["setting"], row["algorithm"], row["seed"]) / "metrics.jsonl"
    if not metrics.is_file():
        return []
    history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [{"setting": row["setting"], "algorithm": row["algorithm"], "seed": str(row["seed"]), **point}
            for point in curve_points(history)]


def run_one(args: argparse.Namespace) -> int:
    """The child process: train one (setting, algorithm, seed) and print its row as JSON."""
    import shutil

    import torch

    from vlm_agent.training.ppo_trainer import VLMPPOTrainer

    torch.set_num_threads(1)
    setting, algorithm, seed = SETTINGS[args.run_one[0]], args.run_one[1], int(args.run_one[2])
    from benchmarks import ppo_learning

    model_dir = ppo_learning.warm_start(warm_start_args(args, setting), setting.env_id, True, setting.show_state)
    run_dir = run_folder(args.work_dir, setting.name, algorithm, seed)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    config = config_for(args, setting, algorithm, seed, model_dir, run_dir)
    started = time.perf_counter()
    trainer = VLMPPOTrainer(config)
    trainer.train()
    seconds = time.perf_counter() - started
    after = evaluate(trainer.policy, args, setting, algorithm)
    controls = control_values(trainer.policy, args, setting, algorithm)
    history = trainer.history
    row = {
        "setting": setting.name, "env_id": setting.env_id, "algorithm": algorithm, "seed": seed,
        "env_steps": trainer.global_step, "updates": trainer.update,
        **held_out_fields(after), **controls,
        "train_seconds": round(seconds, 1),
        "seconds_per_update": round(sum(m["perf/update_seconds"] for m in history) / max(1, len(history)), 2),
        "anchor_share": mean_metric(history, "charts/anchor_share"),
        "informative_share": mean_metric(history, "charts/informative_share"),
        "temperature": args.temperature,
        "value_head_parameters": sum(p.numel() for p in trainer.policy.value_head.parameters())
        if trainer.policy.value_head is not None else 0,
        "peak_rss_mb": peak_rss_mb(),
        "curve": curve_points(history),
    }
    print("ROW " + json.dumps(row), flush=True)
    return 0


def curve_points(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's learning curve: the success of each update's training episodes against environment steps."""
    return [{"global_step": m["global_step"], "success_rate": m["charts/success_rate"], "episodes": m["charts/episodes"]}
            for m in history]


def mean_metric(history: list[dict[str, Any]], name: str) -> float | str:
    """The mean of a metric over a run's updates; "" when the run does not log it (PPO's group shares)."""
    values = [m[name] for m in history if name in m]
    return sum(values) / len(values) if values else ""


def peak_rss_mb() -> float | str:
    """This process's peak resident memory in MB (Linux ``VmHWM``: the high-water mark of its own
    address space, which an exec starts afresh; ``ru_maxrss`` keeps the parent's from before the exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return ""


def warm_start_row(args: argparse.Namespace, setting: Setting) -> dict[str, Any]:
    """The shared warm start of a setting, evaluated on the same held-out episodes."""
    import torch

    from benchmarks import ppo_learning
    from vlm_agent.models.loading import ModelSettings
    from vlm_agent.models.policy import VLMPolicy
    from vlm_agent.models.settings import GenerationSettings

    torch.set_num_threads(1)
    model_dir = ppo_learning.warm_start(warm_start_args(args, setting), setting.env_id, True, setting.show_state)
    policy = VLMPolicy.from_model(ModelSettings(str(model_dir), use_lora=False, device="cpu"),
                                  GenerationSettings(temperature=EVAL_TEMPERATURE, max_new_tokens=64, cot_scale=0.5), seed=0)
    result = evaluate(policy, args, setting, "warm start")
    return {**dict.fromkeys(FIELDS, ""), "setting": setting.name, "env_id": setting.env_id, "algorithm": "warm start",
            "seed": "", "env_steps": 0, "updates": 0, **held_out_fields(result), "warm_start": str(model_dir)}


def random_row(args: argparse.Namespace, setting: Setting) -> dict[str, Any]:
    """Uniformly random legal actions on the same held-out episodes: the level that reading nothing gives."""
    from vlm_agent.agents.simple import RandomAgent

    result = play(RandomAgent(seed=0), args, setting)
    return {**dict.fromkeys(FIELDS, ""), "setting": setting.name, "env_id": setting.env_id, "algorithm": "random",
            "seed": "", "env_steps": 0, "updates": 0, **held_out_fields(result)}


def held_out_fields(result: Any) -> dict[str, Any]:
    """The columns of a held-out evaluation (`evaluate_agent`'s result) in a row."""
    return {"after_success": result.success_rate, "after_ci_low": result.ci95[0], "after_ci_high": result.ci95[1],
            "after_invalid": result.invalid_rate, "after_return": result.mean_return, "eval_episodes": result.episodes}


FIELDS = ["setting", "env_id", "algorithm", "seed", "env_steps", "updates", "after_success", "after_ci_low",
          "after_ci_high", "after_invalid", "after_return", "eval_episodes", "blank_success", "other_success", "train_seconds", "seconds_per_update",
          "anchor_share", "informative_share", "temperature", "value_head_parameters", "peak_rss_mb",
          "warm_start"]


def stem(args: argparse.Namespace) -> str:
    return "algorithms_quick" if args.quick else "algorithms"


def read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_one:
        return run_one(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    rows_path = args.out_dir / f"{stem(args)}.csv"
    curves_path = args.out_dir / f"{stem(args)}_curves.csv"
    rows, curves = read_csv(rows_path), read_csv(curves_path)
    # A run without --resume measures its settings anew; --add-controls only completes rows.
    replaced = frozenset() if args.resume or args.add_controls or args.report_only else frozenset(args.settings)
    # The rows and curve points this invocation measured: only these replace rows in the file, so
    # that benchmarks running at once into one folder keep each other's rows.
    mine: list[dict[str, Any]] = []
    mine_curves: list[dict[str, Any]] = []

    def save(row: dict[str, Any], points: list[dict[str, Any]] = ()) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        mine.append(row)
        mine_curves.extend(points)
        return save_rows(rows_path, curves_path, mine, mine_curves, replaced)

    if args.add_controls:
        filled = {row_key(row): row for row in add_controls(args, rows)}
        for row in [row for row in rows if row["algorithm"] in ALGORITHMS]:
            row = filled.get(row_key(row), row)
            points = missing_curve(args, row, curves)
            if points or row.get("blank_success") not in ("", None):
                rows, curves = save(row, points)
    elif not args.report_only:
        for name in args.settings:
            setting = SETTINGS[name]
            if not args.resume:
                rows = [row for row in rows if row["setting"] != name]
                curves = [point for point in curves if point["setting"] != name]
            done = {(row["algorithm"], str(row["seed"])) for row in rows if row["setting"] == name}
            if ("warm start", "") not in done:
                print(f"[algorithms] {setting.label}: warm start", flush=True)
                rows, curves = save(warm_start_row(args, setting))
            if ("random", "") not in done:
                rows, curves = save(random_row(args, setting))
            # Seed-major: an interrupted benchmark has every algorithm at the first seeds.
            for seed in args.seeds:
                for algorithm in args.algorithms:
                    if (algorithm, str(seed)) in done:
                        continue
                    print(f"[algorithms] {setting.label}: {algorithm} seed {seed}", flush=True)
                    row = run_child(args, name, algorithm, seed)
                    points = [{"setting": name, "algorithm": algorithm, "seed": str(seed), **point}
                              for point in row.pop("curve")]
                    rows, curves = save(row, points)
                    write_report(rows, curves, args)
    write_report(rows, curves, args)
    return 0


CURVE_FIELDS = ["setting", "algorithm", "seed", "global_step", "success_rate", "episodes"]


def save_rows(rows_path: Path, curves_path: Path, rows: list[dict[str, Any]], curves: list[dict[str, Any]],
              replaced_settings: frozenset[str] = frozenset()) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write the ``rows`` and ``curves`` one benchmark measured merged with what is on disk now, under
    a lock: several ``--resume`` benchmarks may run at once into one results folder. Each given row
    replaces the file's row of the same setting, algorithm and seed, each key's given curve points
    that key's points (a row given without points, e.g. with its controls added, keeps its curve);
    the file's rows of ``replaced_settings``, the settings a run without ``--resume`` measures anew,
    are all dropped. Returns the merged rows and curves."""
    import fcntl

    def kept(row: dict[str, Any], given: set[tuple[str, str, str]]) -> bool:
        return row["setting"] not in replaced_settings and row_key(row) not in given

    with open(rows_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        given_rows, given_curves = {row_key(row) for row in rows}, {row_key(point) for point in curves}
        merged_rows = [row for row in read_csv(rows_path) if kept(row, given_rows)] + rows
        merged_curves = [point for point in read_csv(curves_path) if kept(point, given_curves)] + curves
        write_csv(rows_path, merged_rows, FIELDS)
        write_csv(curves_path, merged_curves, CURVE_FIELDS)
    return merged_rows, merged_curves


def run_child(args: argparse.Namespace, setting: str, algorithm: str, seed: int) -> dict[str, Any]:
    """Run one training in a subprocess (its peak memory is its own); its row."""
    command = [sys.executable, "-m", "benchmarks.algorithms", "--run-one", setting, algorithm, str(seed),
               "--num-envs", str(args.num_envs), "--num-steps", str(args.num_steps),
               "--group-size", str(args.group_size), "--groups", str(args.groups), "--learning-rate", str(args.learning_rate),
               "--temperature", str(args.temperature),
               "--loss-aggregation", args.loss_aggregation, "--eval-episodes", str(args.eval_episodes),
               "--sft-demos", str(args.sft_demos),
               "--warm-start-seed", str(args.warm_start_seed), "--work-dir", str(args.work_dir)]
    if args.sft_epochs is not None:
        command += ["--sft-epochs", str(args.sft_epochs)]
    if args.env_steps is not None:
        command += ["--env-steps", str(args.env_steps)]
    if args.quick:
        command.append("--quick")
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        raise SystemExit(f"benchmarks.algorithms: {setting} {algorithm} seed {seed} failed (status {result.returncode})")
    return json.loads(next(line[4:] for line in result.stdout.splitlines() if line.startswith("ROW ")))


def _number(value: Any) -> float:
    return float(value) if value not in ("", None) else float("nan")


def _success(value: Any) -> str:
    return "-" if value in ("", None) else f"{100 * _number(value):.1f}"


def _percent(value: Any) -> str:
    return "" if value in ("", None) else f"{100 * _number(value):.0f}%"


def write_report(rows: list[dict[str, Any]], curves: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The Markdown summary (per setting: warm start, then each algorithm's seeds and mean) and the plot."""
    lines = [
        "# PPO, GRPO, RLOO and GiGPO on the card games (tiny model, CPU)",
        "",
        "Generated by `python -m benchmarks.algorithms`. Each run starts from the same SFT warm start of its "
        f"setting and trains for the same environment-step budget; held-out success in % with Wilson 95% "
        f"intervals on {args.eval_episodes} episodes (seeds 10^9 + i), sampling at T={EVAL_TEMPERATURE:g}, peak learning rate "
        f"{args.learning_rate:g}. PPO: {args.num_envs} envs x {args.num_steps} steps per update with a value head; "
        f"GRPO / RLOO / GiGPO: rounds of {args.groups} groups x {args.group_size} episodes from the same initial "
        "state, no value head. Time per update and peak memory (VmHWM of the run's process) are the run's own. "
        "Blank image / other state: the controls of image-only runs, the trained policy's held-out "
        "success shown frames of the background colour, or another state's frame, with the same prompts (a policy "
        "that reads the image falls towards random play there). "
        "T: the sampling temperature of the run's training rollouts. Informative steps: the share of a "
        "critic-free run's training steps whose group's episode returns were not all equal (the steps GRPO and "
        "RLOO learn from; near-greedy sampling makes a group's episodes alike). Anchor share: GiGPO's steps in an "
        "anchor-state group larger than one.",
        "",
    ]
    for name, setting in SETTINGS.items():
        order = ["random", "warm start", *ALGORITHMS]
        subset = sorted((row for row in rows if row["setting"] == name),
                        key=lambda row: (order.index(row["algorithm"]), str(row["seed"])))
        if not subset:
            continue
        warm = next((row for row in subset if row["algorithm"] == "warm start"), None)
        lines += [f"## {setting.label}", ""]
        if warm is not None and warm.get("warm_start"):
            lines += [f"Warm start: `{Path(warm['warm_start']).name}` (its SFT settings are in the name).", ""]
        lines += ["| algorithm | seed | T | held-out success | blank image | other state | invalid | env steps | updates "
                  "| s / update | peak RSS (MB) | informative steps | anchor share |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in subset:
            lines.append(
                f"| {row['algorithm']} | {row['seed']} | {row.get('temperature') or ''} | "
                f"{100 * _number(row['after_success']):.1f} "
                f"[{100 * _number(row['after_ci_low']):.1f}, {100 * _number(row['after_ci_high']):.1f}] | "
                f"{_success(row.get('blank_success'))} | {_success(row.get('other_success'))} | "
                f"{100 * _number(row['after_invalid']):.1f}% | {row['env_steps']} | {row['updates']} | "
                f"{row['seconds_per_update'] or '-'} | {row.get('peak_rss_mb') or '-'} | "
                f"{_percent(row.get('informative_share'))} | {_percent(row.get('anchor_share'))} |"
            )
        lines += ["", "| algorithm | mean held-out success over seeds | gain over the warm start (points) | seeds |",
                  "|---|---|---|---|"]
        for algorithm in ALGORITHMS:
            runs = [row for row in subset if row["algorithm"] == algorithm]
            if not runs:
                continue
            mean = sum(_number(row["after_success"]) for row in runs) / len(runs)
            gain = "" if warm is None else f"{100 * (mean - _number(warm['after_success'])):+.1f}"
            lines.append(f"| {algorithm} | {100 * mean:.1f} | {gain} | {len(runs)} |")
        lines.append("")
    (args.out_dir / f"{stem(args)}.md").write_text("\n".join(lines) + "\n")
    plot(rows, curves, args.out_dir / f"{stem(args)}.png")


def plot(rows: list[dict[str, Any]], curves: list[dict[str, Any]], path: Path) -> None:
    """Success of training episodes against environment steps, one line per algorithm (mean over seeds,
    band min-max; at each step the update whose rollout covered it), each setting a panel, the warm
    start's held-out level dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [name for name in SETTINGS if any(point["setting"] == name for point in curves)]
    if not names:
        return
    figure, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 4.2), squeeze=False)
    for axis, name in zip(axes[0], names):
        top = max(_number(p["global_step"]) for p in curves if p["setting"] == name)
        grid = np.linspace(top / 16, top, 16)
        for index, algorithm in enumerate(ALGORITHMS):
            per_seed = []
            for seed in sorted({p["seed"] for p in curves if p["setting"] == name and p["algorithm"] == algorithm}):
                points = [p for p in curves if p["setting"] == name and p["algorithm"] == algorithm and p["seed"] == seed]
                steps = np.array([_number(p["global_step"]) for p in points])
                rates = np.array([_number(p["success_rate"]) for p in points])
                # At step g: the success of the update whose rollout covered g (updates differ in size
                # between algorithms; the last update stands for the steps after it).
                covering = np.minimum(np.searchsorted(steps, grid), len(steps) - 1)
                per_seed.append(rates[covering])
            if not per_seed:
                continue
            values = 100 * np.array(per_seed, dtype=float)
            axis.plot(grid, np.nanmean(values, axis=0), marker="o", markersize=3, color=f"C{index}", label=algorithm)
            axis.fill_between(grid, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=f"C{index}", alpha=0.15,
                              linewidth=0)
        warm = next((row for row in rows if row["setting"] == name and row["algorithm"] == "warm start"), None)
        if warm is not None:
            axis.axhline(100 * _number(warm["after_success"]), linestyle="--", color="grey", linewidth=1,
                         label="warm start (held out)")
        chance = next((row for row in rows if row["setting"] == name and row["algorithm"] == "random"), None)
        if chance is not None:
            axis.axhline(100 * _number(chance["after_success"]), linestyle=":", color="black", linewidth=1,
                         label="random play (held out)")
        axis.set_title(SETTINGS[name].label)
        axis.set_xlabel("environment steps")
        axis.set_ylabel("success of training episodes (%)")
        axis.set_ylim(0, 105)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=5, frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


if __name__ == "__main__":
    raise SystemExit(main())
