"""Assemble ``benchmarks/README.md`` from the result files the benchmark scripts wrote.

Nothing in the README is typed by hand except each section's short introduction (what the
benchmark measures and the exact command that produces it), kept in :data:`SECTIONS` below.
Every table and plot comes from ``benchmarks/results/<name>.{md,csv,png}``, written by the
benchmark script itself together with the machine it ran on (see :func:`machine_description`).
A benchmark whose results are missing gets one line naming the command that produces them.

Usage (from the repository root)::

    python -m benchmarks.make_readme                 # writes benchmarks/README.md
    python -m benchmarks.make_readme --check         # exit 1 if the README is out of date

This module also defines the result-file conventions that the benchmark scripts share:
:data:`RESULTS_DIR`, :func:`machine_description` and :func:`available_cores`.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import os
import platform
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCHMARKS_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
README_PATH = BENCHMARKS_DIR / "README.md"


@dataclass(frozen=True)
class BenchmarkSection:
    """One README section: a hand-written introduction plus the generated result files.

    Attributes:
        name: stem of the result files, ``results/<name>.{md,csv,png}``.
        title: section heading.
        measures: one short paragraph, what the benchmark measures and how to read it.
        command: the exact shell command, run from the repository root, that writes the results.
    """

    name: str
    title: str
    measures: str
    command: str


SECTIONS: tuple[BenchmarkSection, ...] = (
    BenchmarkSection(
        name="demo_run",
        title="The demo, end to end (`vlm-agent train`)",
        measures=(
            "The README's one command, `vlm-agent train` with no model and no config, in a fresh folder: the "
            "seconds of each stage as the run measured them (aligning a tiny random model to read NumberLine's "
            "image, the SFT warm start, PPO from the image alone, the closing held-out comparison), the closing "
            "comparison with its 95% intervals, the run's learning curve, and the machine. The README quotes "
            "these numbers. On a shared machine the seconds move with the other programs' load (the load average "
            "is given below)."
        ),
        command="python -m benchmarks.demo_run",
    ),
    BenchmarkSection(
        name="env_throughput",
        title="Environment throughput",
        measures=(
            "Environment steps per second of the gym_cards environments (reset, step and render "
            "the 300x300 frame), without any agent, against the original environments' speed."
        ),
        command="python -m benchmarks.env_throughput",
    ),
    BenchmarkSection(
        name="rollout_throughput",
        title="Rollout throughput (acting with a tiny VLM)",
        measures=(
            "Environment steps per second of the acting loop (prompt, generation, scoring of "
            "the sampled tokens, parsing, stepping and rendering) with a tiny random-weight VLM, for "
            "N = 1, 4, 8, 16 parallel environments acting in one batched generation, and the "
            "share of wall time in each stage, at one torch thread (what `vlm-agent train` uses on "
            "CPU) and at all cores, with fixed-length answers (EOS suppressed: the same work per env "
            "step for every N) and with sampled lengths (a batch waits for its longest answer). The "
            "speedup column is relative to N = 1 in the same setting."
        ),
        command="python -m benchmarks.rollout_throughput",
    ),
    BenchmarkSection(
        name="eval_throughput",
        title="Batched evaluation",
        measures=(
            "Held-out episodes per second of `vlm-agent eval`'s loop with a tiny random-weight VLM (the CPU "
            "demo's 64 new tokens, one torch thread) for N = 1, 8 and 16 environments answered in one "
            "batched generate call; N = 16 is the default of `vlm-agent eval`. Every N plays the same held-out "
            "episodes (N = 1 times the first of them and is scaled by env steps, see the notes under the "
            "table); the speed-up column is relative to N = 1 in the same run."
        ),
        command="python -m benchmarks.eval_throughput",
    ),
    BenchmarkSection(
        name="policy_speed",
        title="Policy speed",
        measures=(
            "Median seconds of one batch of the rollout engine, `HFEngine.generate` (batched generation + "
            "scoring), and one `evaluate` (forward + backward) on tiny random models, for batch sizes 1 and 8."
        ),
        command="python -m benchmarks.policy_speed",
    ),
    BenchmarkSection(
        name="rollout_engines",
        title="Rollout engines: Hugging Face generate vs a vLLM server",
        measures=(
            "Environment steps and generated tokens per second of one PPO rollout (NumberLine, 16 envs x 4 "
            "steps) sampled by HF `generate` in-process and by a vLLM server (CPU build, its own venv), same "
            "tiny model and seeds; for vLLM also the engine-vs-trainer log-prob mismatch over the sampled tokens. "
            "On a CPU at tiny size vLLM is slower: the row shows the path works, not its GPU speed."
        ),
        command="python -m benchmarks.rollout_engines",
    ),
    BenchmarkSection(
        name="tiny_vlm_readout",
        title="Reading the image (tiny VLM alignment)",
        measures=(
            "Can a tiny VLM read the game state from the image? A tiny Qwen2-VL-architecture model "
            "with legible vision settings is aligned on images of env states -> their read-out "
            "(`vlm-agent align`: the projector writes each read-out field into one image token, then "
            "the language model's layers learn to read them); the table gives the read-out accuracy "
            "on evaluation states that no training image shows (NumberLine 0..9: its `split=\"eval\"` "
            "pairs), from the image alone and with two controls that must fall to chance: a blank "
            "image (the background colour only) and another state's image. Each row names the "
            "aligned model (weights hash) and the commit. The card games with a formula have their "
            "own files under Other results: `tiny_vlm_readout_ezpoints` (EZPoints' two cards and "
            "current formula) and `tiny_vlm_readout_points24` (Points24's four cards and formula), "
            "each at seeds 0, 1 and 2 with `--answer-slot-targets --visible-slots`, their held-out states "
            "split by the deal (the cards) so that no held-out deal occurs in training."
        ),
        command=("python -m benchmarks.tiny_vlm_readout --seeds 0 1 2 --env-kwargs '{\"max_position\": 9}' "
                 "--projector-fit --output-norm-lr-factor 10 --language-steps 600"),
    ),
    BenchmarkSection(
        name="readout_bottleneck",
        title="Where the tiny VLM fails to read",
        measures=(
            "Why a tiny VLM trained end to end does not read the image: the same model, data and "
            "budget, shown the state as text, the image, or the image with its value tokens replaced "
            "by word embeddings (oracle), with or without the field's name; plus a linear probe on "
            "the random image tokens. The oracle rows inject the answer and measure the language "
            "model's lookup alone; `vlm-agent align` is built on what they show."
        ),
        command="python -m benchmarks.readout_bottleneck",
    ),
    BenchmarkSection(
        name="ppo_learning",
        title="PPO learning (tiny VLM on CPU)",
        measures=(
            "Does PPO learn? A tiny VLM is warm-started by SFT on partly wrong expert demonstrations, "
            "then trained with PPO on CPU; success on held-out seeds before and after, for "
            "NumberLine (CoT-scale lambda 0, 0.5, 1 and the action-only prompt) and Blackjack, with the "
            "state's text in the prompt and from the image alone (after the read-out alignment). "
            "Measured before the fix of evaluation's random rescue (CHANGELOG, issue 15): a move for an "
            "unusable answer was then correlated with the deal and favoured success. The warm-start "
            "columns had no unusable answers and are unaffected; after PPO, the lambda = 0 row had 8.6% "
            "unusable steps and may be a few points optimistic, the other rows 0-1.7%."
        ),
        command="python -m benchmarks.ppo_learning",
    ),
    BenchmarkSection(
        name="ppo_learning_alfworld",
        title="PPO learning on ALFWorld (tiny VLM on CPU)",
        measures=(
            "A tiny VLM warm-started by SFT on alfworld's expert (train games, a share of wrong actions), "
            "then PPO on the train games, per memory K (the prompt recalls the last K steps); success and "
            "goal-condition rate with 95% intervals before and after, on the train games and on the held-out "
            "(valid_unseen) games, the unusable-answer rate and the issue's targets checked."
        ),
        command="python -m benchmarks.ppo_learning --alfworld --history-steps 0 2",
    ),
    BenchmarkSection(
        name="algorithms",
        title="PPO, GRPO, RLOO and GiGPO side by side (tiny VLM on CPU)",
        measures=(
            "The four algorithms at equal environment-step budgets from the same SFT warm start of each "
            "setting: NumberLine from the image alone (2048 steps), EZPoints with the state as text (2048 "
            "steps, and 6144 steps from the same warm start): held-out success with 95% intervals per seed, "
            "the mean gain over the warm start, time and peak memory per run, GiGPO's anchor share, the "
            "critic-free runs' informative-step share, and the success of training episodes "
            "against environment steps (mean over seeds, band min-max). PPO collects 16 envs x 16 steps per "
            "update with a value head; the critic-free algorithms play rounds of 16 groups x 4 episodes "
            "without one (more envs per round, so more generation memory: their peak RSS is higher although "
            "no value head is built)."
        ),
        command="python -m benchmarks.algorithms",
    ),
    BenchmarkSection(
        name="cnn_rl_baseline",
        title="CNN + RL baseline (PPO on pixels)",
        measures=(
            "PPO (stable-baselines3, NatureCNN policy) trained on downscaled pixel observations "
            "of each card game with the paper's environment-step budget (15000 steps) at learning "
            "rate 5e-4 (OpenAI's and CleanRL's Procgen PPO), once per seed (0-4, as single seeds "
            "are noisy); each row gives the mean over seeds and every seed's value. The paper's "
            "CNN + RL number is the peak training success within the budget (best success rate over "
            "100 consecutive training episodes), compared here on the same metric; each trained "
            "policy is also evaluated on held-out seeds (pooled 95% Wilson interval). The paper gives "
            "no CNN hyperparameters, so NumberLine also trains at learning rates 2.5e-4 and 1e-3 "
            "('paper, lr ...' rows) to show how much its result depends on the learning rate. The CNN "
            "sees NumberLine's published image: only the text 'Target: x' and 'Current: y', no drawn "
            "number line. The plot shows the success rate of training episodes, one line per seed."
        ),
        command="python -m benchmarks.cnn_rl_baseline",
    ),
    BenchmarkSection(
        name="prompting_baselines",
        title="Prompting baselines",
        measures=(
            "Success rate of agents that are not trained here (random, expert, prompted models) "
            "on the card games, against the paper's prompting rows."
        ),
        command="python -m benchmarks.prompting_baselines",
    ),
    BenchmarkSection(
        name="alfworld_speed",
        title="ALFWorld adapter speed",
        measures=(
            "Reset and step times of the ALFWorld adapter (text backend) playing the expert, with and "
            "without the engine caches."
        ),
        command="python -m benchmarks.alfworld_speed",
    ),
    BenchmarkSection(
        name="gpu_check",
        title="GPU check at real size",
        measures=(
            "One PPO update of a randomly initialised Qwen2.5-VL-3B-shaped model (bf16, LoRA r128, gradient "
            "checkpointing, the paper's settings, a 32-sample rollout) on one GPU: generated tokens/s, update "
            "seconds, peak GPU memory, and the largest sampler-vs-forward log-prob gap at zero parameter change "
            "in bf16 and fp32. Not run yet: no GPU was available (CI runs it at tiny size on CPU)."
        ),
        command="python -m benchmarks.gpu_check --output_dir benchmarks/results",
    ),
)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity on macOS / Windows
        return os.cpu_count() or 1


def save_figure(figure: Any, path: Path) -> None:
    """Lay out, write (PNG, 100 dpi) and close a matplotlib figure of a benchmark."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def machine_description() -> str:
    """One line naming the machine a benchmark ran on, for the benchmark's own result files.

    CPU count, platform, Python and library versions (read from package metadata, so calling it
    does not import torch) and the current 1-minute load average.
    """
    versions = []
    for package in ("torch", "transformers", "gymnasium", "stable-baselines3"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    line = (
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), "
        f"Python {platform.python_version()}, " + ", ".join(versions)
    )
    if sys.platform != "win32":  # os.getloadavg exists on POSIX only
        # Timings on a shared machine depend on what else runs: say how busy it was.
        line += f"; load average {os.getloadavg()[0]:.1f} when the results were written"
    return line


def source_commit() -> str:
    """The commit the benchmark ran at (short hash), ``+changes`` when tracked files differ from
    it, or ``unknown`` outside a git checkout: results rows say which code measured them."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


_HEADING = re.compile(r"^(#{1,6})(\s)", re.MULTILINE)


def write_csv_results(path: Path, columns: Sequence[str], rows: list[dict[str, Any]], float_format: str) -> Path:
    """Write a benchmark's CSV result: a header of ``columns``, then each row with its floats
    formatted by ``float_format`` (e.g. ``".4f"``); returns ``path``."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: format(v, float_format) if isinstance(v, float) else v for k, v in row.items()})
    return path


def write_markdown_results(path: Path, table: list[str], note: str, command: str) -> Path:
    """Write a benchmark's Markdown result: its table, the note on how it was measured, the machine
    (:func:`machine_description`) and the exact command; returns ``path``."""
    lines = [*table, "", note, "", machine_description() + ".", "", f"Command: `{command}`"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def demote_headings(markdown: str, levels: int) -> str:
    """Add ``levels`` '#' to every ATX heading outside fenced code blocks (max depth 6).

    Embedded result files keep their own structure but sit below the section's heading.
    """
    out_lines = []
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence:
            match = _HEADING.match(line)
            if match:
                depth = min(6, len(match.group(1)) + levels)
                line = "#" * depth + line[len(match.group(1)) :]
        out_lines.append(line)
    return "\n".join(out_lines)


def render_section(
    section: BenchmarkSection, results_dir: Path, readme_dir: Path, heading_level: int = 2
) -> tuple[str, bool]:
    """Markdown for one section and whether its results exist.

    The section embeds ``<name>.md`` (headings demoted below the section heading), shows
    ``<name>.png`` and links ``<name>.csv`` when present. Without ``<name>.md`` the section says
    which command produces it. An empty ``measures`` or ``command`` is left out.
    """
    md_path = results_dir / f"{section.name}.md"
    lines = ["#" * heading_level + " " + section.title, ""]
    if section.measures:
        lines += [section.measures, ""]
    if section.command:
        lines += ["```bash", section.command, "```", ""]
    if not md_path.is_file():
        lines.append(f"_No results yet: run `{section.command}` to produce `{section.name}.md`._")
        return "\n".join(lines) + "\n", False
    lines.append(demote_headings(md_path.read_text(encoding="utf-8").strip(), levels=heading_level))
    lines.append("")
    png_path = results_dir / f"{section.name}.png"
    if png_path.is_file():
        rel = Path(os.path.relpath(png_path, readme_dir)).as_posix()
        lines += [f"![{section.title}]({rel})", ""]
    csv_path = results_dir / f"{section.name}.csv"
    if csv_path.is_file():
        rel = Path(os.path.relpath(csv_path, readme_dir)).as_posix()
        lines += [f"Raw numbers: [`{rel}`]({rel}).", ""]
    return "\n".join(lines) + "\n", True


def assemble_readme(
    sections: tuple[BenchmarkSection, ...] = SECTIONS,
    results_dir: Path = RESULTS_DIR,
    readme_path: Path = README_PATH,
) -> tuple[str, list[str]]:
    """The README text and the names of the sections whose results are missing."""
    readme_dir = readme_path.resolve().parent
    parts = [
        "# Benchmarks",
        "",
        (
            "<!-- Generated by `python -m benchmarks.make_readme`; edit benchmarks/make_readme.py "
            "or re-run the benchmark instead of editing this file. -->"
        ),
        "",
        (
            "Every table and plot below was written by the benchmark script named in its section, "
            "on the machine that the results themselves name; this file only assembles them. "
            "Run the commands from the repository root with the package installed "
            "(`pip install -e .[all]`)."
        ),
        "",
    ]
    parts += [f"- [{s.title}](#{_anchor(s.title)})" for s in sections]
    parts.append("")
    missing = []
    for section in sections:
        text, present = render_section(section, results_dir, readme_dir)
        parts.append(text)
        if not present:
            missing.append(section.name)
    known = {section.name for section in sections}
    others = sorted(path.stem for path in results_dir.glob("*.md") if path.stem not in known)
    if others:
        parts += [
            "## Other results",
            "",
            (
                "Result files in `benchmarks/results/` that no section above introduces (e.g. a benchmark "
                "run with another `--stem`), shown as written."
            ),
            "",
        ]
        for stem in others:
            text, _ = render_section(BenchmarkSection(stem, stem, "", ""), results_dir, readme_dir, heading_level=3)
            parts.append(text)
    return "\n".join(parts).rstrip() + "\n", missing


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` verify) the benchmarks README; report missing results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the <name>.{md,csv,png} files are")
    parser.add_argument("--output", type=Path, default=README_PATH, help="README file to write")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the README differs")
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        parser.error(f"results directory {args.results_dir} does not exist; run a benchmark first")
    text, missing = assemble_readme(SECTIONS, args.results_dir, args.output)
    for name in missing:
        command = next(s.command for s in SECTIONS if s.name == name)
        print(f"missing results for {name}: run `{command}`")
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is out of date: run `python -m benchmarks.make_readme`")
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(SECTIONS) - len(missing)} of {len(SECTIONS)} sections with results)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
