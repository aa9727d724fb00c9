"""Can a tiny VLM read the game state from the image? Read-out accuracy on unseen states, with controls.

A tiny Qwen2-VL-architecture model with the legible vision settings
(`vlm_agent.demo.tiny_models.LEGIBLE_VISION`) is aligned on images of env states -> their read-out
(`vlm_agent.demo.alignment`: the projector first, then the language model), then asked to read
out evaluation states from the image alone, greedy decoding; each field must match exactly. The
evaluation states are disjoint from the training states by construction
(`vlm_agent.demo.readout.state_split`: NumberLine's `split="eval"` states, other envs' states by
the read-out's hash, the formula games' by the hash of their deal: the cards); the results say how many distinct states each side had. Two controls give
the same model, with the same prompt, a frame of the image's background colour, and the image of
another evaluation state: both must fall to chance (the share of the most frequent true value),
proof that the answer follows what is drawn. Every row names the aligned model
(`vlm_agent.demo.alignment.model_identity`) and the commit that measured it.

    python -m benchmarks.tiny_vlm_readout            # the full benchmark (a few CPU minutes)
    python -m benchmarks.tiny_vlm_readout --quick    # smoke run of every stage

Writes `benchmarks/results/tiny_vlm_readout.{csv,md,png}` and keeps the aligned model in
`--work-dir` (default `runs/tiny_vlm_readout`).
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.make_readme import RESULTS_DIR, machine_description, save_figure


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from vlm_agent.demo.alignment import VLMAlignConfig
    from vlm_agent.demo.readout import DEFAULT_ALIGN_ENVS

    defaults = VLMAlignConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Tiny sizes: checks every stage in about a minute.")
    parser.add_argument("--arch", default="qwen2_vl", help="Tiny architecture.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="One alignment per seed (tiny model, images, batches): the read-out varies by seed.")
    parser.add_argument("--envs", nargs="+", default=list(DEFAULT_ALIGN_ENVS))
    parser.add_argument("--env-kwargs", default=None,
                        help="Options of every env (JSON). Default: NumberLine's line 0..9 (90 states; 0..20: 420) "
                             "when NumberLine is the only env, else none.")
    parser.add_argument("--num-examples", type=int, default=defaults.num_examples, help="Training images per env.")
    parser.add_argument("--projector-steps", type=int, default=defaults.projector_steps)
    parser.add_argument("--projector-fit", action="store_true",
                        help="Stage 1 starts with the least-squares fit of the projector's output layer.")
    parser.add_argument("--quiet-image-tokens", action="store_true",
                        help="Stage 1 also sends the image tokens that hold no read-out slot to zero "
                             "(VLMAlignConfig.quiet_image_tokens).")
    parser.add_argument("--ordered-slot-targets", action="store_true",
                        help="Stage 1 keeps the order and count of a value's tokens ('14', '11') in its slot target "
                             "(VLMAlignConfig.ordered_slot_targets).")
    parser.add_argument("--answer-slot-targets", action="store_true",
                        help="Stage 1 builds a value's target from the tokens its read-out answer writes "
                             "(VLMAlignConfig.answer_slot_targets: EZPoints' formula '*' is the token ' \"*\"}').")
    parser.add_argument("--visible-slots", action="store_true",
                        help="Stage 1 puts no slot on a token where one of the field's values draws nothing "
                             "(VLMAlignConfig.visible_slots: EZPoints' empty formula).")
    parser.add_argument("--language-steps", type=int, default=defaults.language_steps)
    parser.add_argument("--full-steps", type=int, default=defaults.full_steps)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--output-norm-lr-factor", type=float, default=defaults.output_norm_lr_factor,
                        help="Stage 2: learning-rate factor of the language model's final norm.")
    parser.add_argument("--eval-examples", type=int, default=100, help="Held-out images per env.")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/tiny_vlm_readout"))
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--stem", default=None, help="Result file stem (default tiny_vlm_readout[_quick]).")
    args = parser.parse_args(argv)
    if args.env_kwargs is None:
        args.env_kwargs = '{"max_position": 9}' if set(args.envs) == {"gym_cards/NumberLine-v0"} else "{}"
    if args.quick:
        args.num_examples, args.projector_steps, args.language_steps, args.full_steps, args.eval_examples = 128, 2, 4, 0, 8
    args.stem = args.stem or ("tiny_vlm_readout_quick" if args.quick else "tiny_vlm_readout")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    torch.set_num_threads(1)
    from benchmarks.make_readme import source_commit
    from vlm_agent.demo.alignment import VLMAlignConfig, run_alignment

    args = parse_args(argv)
    commit = source_commit()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    results: dict[int, Any] = {}
    started = time.perf_counter()
    for seed in args.seeds:
        config = VLMAlignConfig(
            tiny_arch=args.arch, env_ids=list(args.envs), env_kwargs=args.env_kwargs, num_examples=args.num_examples,
            projector_steps=args.projector_steps, projector_fit=args.projector_fit,
            quiet_image_tokens=args.quiet_image_tokens, ordered_slot_targets=args.ordered_slot_targets,
            answer_slot_targets=args.answer_slot_targets, visible_slots=args.visible_slots, language_steps=args.language_steps, full_steps=args.full_steps,
            learning_rate=args.learning_rate, output_norm_lr_factor=args.output_norm_lr_factor,
            eval_examples=args.eval_examples, seed=seed,
            output_dir=str(args.work_dir / f"aligned_seed{seed}"), progress_bar=True,
        )
        results[seed] = run_alignment(config)
        by_env: dict[str, dict[str, Any]] = {}
        for accuracy in results[seed].accuracy:
            by_env.setdefault(accuracy.env_id, {})[accuracy.control] = accuracy
        for env_id, shown in by_env.items():
            image, blank, other = shown["image"], shown["blank"], shown["other state"]
            common = {"env_id": env_id, "seed": seed, "model": results[seed].identity,
                      "train_states": results[seed].training_states[env_id], "eval_states": image.states,
                      "images": image.images}
            for key in image.fields:
                rows.append({**common, "field": key, "image_accuracy": image.fields[key],
                             "blank_accuracy": blank.fields[key], "other_state_accuracy": other.fields[key],
                             "chance": image.chance[key], "commit": commit})
                if key in image.items:
                    rows.append({**common, "field": f"{key} (each card)", "image_accuracy": image.items[key],
                                 "blank_accuracy": blank.items[key], "other_state_accuracy": other.items[key],
                                 "chance": "", "commit": commit})
    seconds = time.perf_counter() - started
    write_results(rows, results, config, seconds, args)
    return 0


def write_results(rows: list[dict[str, Any]], results: dict[int, Any], config: Any, seconds: float,
                  args: argparse.Namespace) -> None:
    from vlm_agent.demo.tiny_models import LEGIBLE_VISION

    out = args.out_dir
    with open(out / f"{args.stem}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def pct(value: Any) -> str:
        return "" if value == "" else f"{100 * value:.1f}"

    vision = LEGIBLE_VISION
    lines = [
        "# Reading the state from the image (tiny VLM after alignment)",
        "",
        (f"Tiny `{config.tiny_arch}` (random init, built offline) with {vision.image_size} px images, "
         f"vision width {vision.width} x {vision.depth} layers, patch 14; aligned on {config.num_examples} state images "
         f"per env: {'the least-squares fit of the projector output layer and ' if config.projector_fit else ''}"
         f"{config.projector_steps} steps of the projector (read-out slots"
         f"{'; the other image tokens sent to zero' if config.quiet_image_tokens else ''}"
         f"{'; a value token order kept in its target' if config.ordered_slot_targets else ''}"
         f"{'; targets from the tokens the answer writes' if config.answer_slot_targets else ''}"
         f"{'; no slot where a value draws nothing' if config.visible_slots else ''}), "
         f"{config.language_steps} steps "
         f"of the language model's layers (its final norm at {config.output_norm_lr_factor:g}x the learning rate), "
         f"{config.full_steps} of the whole model (batch {config.batch_size}, lr {config.learning_rate:g}), one alignment per seed ({', '.join(map(str, results))}: the tiny model, "
         f"the images and the batches); env options {args.env_kwargs}; {seconds / 60:.1f} minutes in all, measurement "
         f"included. Accuracy in % on {rows[0]['images']} images of evaluation states per env (greedy read-out, exact "
         "match per field); train / eval states: the distinct states among the training and evaluation images, two "
         "disjoint sets by construction (NumberLine's `split`, EZPoints and Points24 by the hash of the deal (their cards), other envs by the read-out's hash); blank: the same "
         "model given a frame of the background colour; other state: given another evaluation image (a different "
         "state), scored against the prompt's own state; chance: the most frequent true value's share; model: "
         f"the aligned model's weights hash. Commit {rows[0]['commit']}."),
        "",
        "| env | field | seed | model | train / eval states | from the image | blank image | other state | chance |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['env_id'].split('/')[-1]} | {row['field']} | {row['seed']} | {row['model']} | "
                     f"{row['train_states']} / {row['eval_states']} | {pct(row['image_accuracy'])} | "
                     f"{pct(row['blank_accuracy'])} | {pct(row['other_state_accuracy'])} | {pct(row['chance'])} |")
    lines += ["", machine_description(), "", f"Command: `python -m benchmarks.tiny_vlm_readout {shlex.join(args.argv)}`", ""]
    (out / f"{args.stem}.md").write_text("\n".join(lines))
    plot(rows, results, out / f"{args.stem}.png")


def plot(rows: list[dict[str, Any]], results: dict[int, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for seed, result in results.items():
        left.plot(range(1, len(result.losses) + 1), result.losses, label=f"seed {seed}", linewidth=1)
    first = next(iter(results.values()))
    if first.projector_losses:
        left.axvline(len(first.projector_losses), color="grey", linestyle="--", label="projector | language model")
    left.legend(fontsize=8)
    left.set_yscale("log")
    left.set_xlabel("alignment step")
    left.set_ylabel("read-out loss")
    left.set_title("Alignment loss")
    left.grid(alpha=0.3)
    positions = range(len(rows))
    width = 0.27
    right.bar([p - width for p in positions], [100 * r["image_accuracy"] for r in rows], width, label="image")
    right.bar(list(positions), [100 * r["blank_accuracy"] for r in rows], width, label="blank")
    right.bar([p + width for p in positions], [100 * r["other_state_accuracy"] for r in rows], width,
              label="other state")
    right.scatter([p for p, r in zip(positions, rows) if r["chance"] != ""],
                  [100 * r["chance"] for r in rows if r["chance"] != ""], color="black", marker="_", s=200,
                  label="chance", zorder=3)
    right.set_xticks(list(positions), [f"{r['env_id'].split('/')[-1][:-3]}\n{r['field']}\nseed {r['seed']}" for r in rows],
                     fontsize=5)
    right.set_ylabel("held-out read-out accuracy (%)")
    right.set_title("Read-out of unseen states: image vs blank and other-state images")
    right.legend(fontsize=8)
    save_figure(figure, path)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
