"""Does PPO learn? Warm start an imperfect tiny policy by SFT, run PPO, evaluate before and after.

On CPU with the tiny offline models (random weights; see vlm_agent.demo.tiny_models), for NumberLine
and Blackjack:

1. Warm start: SFT on expert demonstrations of which `--wrong-action-rate` are deliberately wrong
   (an imperfect starting policy, as the paper starts from an SFT checkpoint).
2. Evaluate the warm start on held-out seeds (`vlm_agent.evaluation.evaluate.evaluate_agent`).
3. PPO from the warm start; evaluate the final policy on the same held-out seeds.

Variants: the CoT-scaled log-prob's lambda in {0, 0.5, 1} on NumberLine, the action-only prompt
on NumberLine, and lambda 0.5 on Blackjack; each with the state's text in the prompt
(`show_state`) and from the image alone ("image only": the tiny model gets legible vision
settings and a read-out alignment stage before SFT, `vlm_agent.demo.alignment`).

    python benchmarks/ppo_learning.py                  # the full benchmark (~30-60 CPU minutes)
    python benchmarks/ppo_learning.py --quick          # a smoke run of every stage (a few minutes)
    python benchmarks/ppo_learning.py --alfworld       # the ALFWorld rows (train and held-out games)
    python benchmarks/ppo_learning.py --variants "NumberLine CoT lambda=0.5 (image only)"   # rerun one, keep the rest

Writes `benchmarks/results/ppo_learning.{csv,md,png}` and `ppo_learning_curves.csv` (per-update
training metrics of every run); `--alfworld` writes `ppo_learning_alfworld.{csv,md}` and
`ppo_learning_alfworld_curves.csv` (`benchmarks/ppo_learning_alfworld.py`): per memory K
(`--history-steps`), success and goal-condition rate before and after PPO on the train games and on
the held-out (`valid_unseen`) games, and the unusable-answer rate. Runs go to `--work-dir` (default `runs/ppo_learning`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from benchmarks import ppo_learning_alfworld
except ImportError:  # run as a script (python benchmarks/ppo_learning.py): benchmarks/ is on sys.path
    import ppo_learning_alfworld  # type: ignore[no-redef]

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Variant:
    """One PPO run of the benchmark."""

    name: str
    env_id: str
    use_cot: bool
    cot_scale: float
    show_state: bool = True  # False: the model sees only the image (aligned first to read it)
    max_position: int | None = None  # NumberLine's long line: trained on split "train", evaluated on "eval"

    def env_kwargs(self, split: str) -> dict[str, Any]:
        """The env options of the alignment, SFT and PPO (``"train"``) or of the evaluations (``"eval"``)."""
        return {} if self.max_position is None else {"max_position": self.max_position, "split": split}


_TEXT_STATE = (
    Variant("NumberLine CoT lambda=0.5", "gym_cards/NumberLine-v0", True, 0.5),
    Variant("NumberLine CoT lambda=0", "gym_cards/NumberLine-v0", True, 0.0),
    Variant("NumberLine CoT lambda=1", "gym_cards/NumberLine-v0", True, 1.0),
    Variant("NumberLine action-only", "gym_cards/NumberLine-v0", False, 0.5),
    Variant("Blackjack CoT lambda=0.5", "gym_cards/Blackjack-v0", True, 0.5),
)
#: NumberLine's long line for the unseen-pairs rows (gym_cards.envs.number_line.evaluation_pair).
LONG_LINE = 9
VARIANTS = _TEXT_STATE + tuple(
    Variant(f"{v.name} (image only)", v.env_id, v.use_cot, v.cot_scale, show_state=False) for v in _TEXT_STATE
) + (Variant(f"NumberLine 0..{LONG_LINE} CoT lambda=0.5 (image only, unseen pairs)", "gym_cards/NumberLine-v0", True,
             0.5, show_state=False, max_position=LONG_LINE),)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Tiny sizes: checks every stage in a few minutes.")
    parser.add_argument("--arch", default="qwen2_vl", help="Tiny architecture.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--wrong-action-rate", type=float, default=0.2, help="Share of wrong SFT answers.")
    parser.add_argument("--align-steps", type=int, nargs=3, default=None, metavar=("PROJECTOR", "LANGUAGE", "FULL"),
                        help="Alignment steps of the image-only warm starts, per stage (default: VLMAlignConfig's).")
    parser.add_argument("--aligned-model", type=Path, default=None,
                        help="Start the image-only warm starts from this aligned model (e.g. the one "
                             "benchmarks/tiny_vlm_readout.py measured: runs/tiny_vlm_readout/aligned) instead of aligning anew.")
    parser.add_argument("--sft-demos", type=int, default=512)
    parser.add_argument("--sft-epochs", type=float, default=12.0,
                        help="SFT epochs; the tiny model starts copying the state into its answer only after ~500 steps (512 demos, batch 8).")
    parser.add_argument("--sft-lr", type=float, default=3e-3,
                        help="SFT learning rate (tiny models: 3e-3 learns the state read-out; 1e-3 was too slow).")
    parser.add_argument("--image-sft-lr", type=float, default=1e-3,
                        help="SFT learning rate of the image-only warm starts (language layers only): at 3e-3 the "
                             "warm start lost the target number's reading (33%%), at 1e-3 it kept both (100%%).")
    parser.add_argument("--ppo-steps", type=int, default=2048, help="Environment steps of each PPO run.")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--num-steps", type=int, default=16, help="Steps per env per update.")
    parser.add_argument("--eval-episodes", type=int, default=150)
    parser.add_argument("--variants", nargs="*", default=None, help="Subset of variant names to run.")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/ppo_learning"))
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--alfworld", action="store_true",
                        help="Run the ALFWorld rows instead of the card games (see run_alfworld).")
    ppo_learning_alfworld.add_arguments(parser)
    parser.add_argument("--report-only", action="store_true",
                        help="Rebuild the Markdown and PNG from the CSVs of an earlier run (no training).")
    args = parser.parse_args(argv)
    if args.quick:
        args.sft_demos, args.sft_epochs, args.ppo_steps = 32, 1.0, 64
        args.num_envs, args.num_steps, args.eval_episodes = 4, 8, 8
    return args


#: Alignment settings of the envs VLMAlignConfig's defaults (NumberLine's) do not suit, as
#: benchmarks/results/tiny_vlm_readout_blackjack.md measured them.
ALIGN_SETTINGS: dict[str, dict[str, Any]] = {
    "gym_cards/Blackjack-v0": {"num_examples": 4096, "projector_steps": 0, "projector_fit": True,
                               "language_steps": 1500, "output_norm_lr_factor": 10.0},
}

#: ... and of NumberLine's long line (the unseen-pairs row), as benchmarks/results/tiny_vlm_readout.md measured them.
LONG_LINE_ALIGN_SETTINGS: dict[str, Any] = {"projector_fit": True, "language_steps": 600, "output_norm_lr_factor": 10.0}


def aligned_model(args: argparse.Namespace, env_id: str, env_kwargs: dict[str, Any] | None = None) -> Path:
    """The legible tiny model aligned to read ``env_id``'s images (cached in the work dir); its
    training images come from the ``"train"`` states of ``env_kwargs`` (``readout.state_split``)."""
    from vlm_agent.demo.alignment import VLMAlignConfig, run_alignment

    if args.aligned_model is not None:
        summary = args.aligned_model / "align_summary.json"
        if not summary.is_file():
            raise SystemExit(f"--aligned-model {args.aligned_model}: no align_summary.json there; run vlm-agent align first")
        try:
            aligned_on = json.loads(summary.read_text())["config"]["env_ids"]
        except (ValueError, KeyError, TypeError) as error:
            raise SystemExit(f"--aligned-model {args.aligned_model}: unreadable align_summary.json ({error!r})") from None
        if env_id not in aligned_on:
            raise SystemExit(f"--aligned-model {args.aligned_model} was aligned on {aligned_on}, not {env_id}: "
                             "run the image-only rows of one env at a time with it")
        return args.aligned_model
    steps = dict(ALIGN_SETTINGS.get(env_id, {}))
    if env_kwargs and "max_position" in env_kwargs:
        steps.update(LONG_LINE_ALIGN_SETTINGS)
    if args.align_steps is not None:
        steps.update(zip(("projector_steps", "language_steps", "full_steps"), args.align_steps))
    if args.quick:
        steps = {"num_examples": 32, "projector_steps": 2, "language_steps": 2, "full_steps": 0}
    config = VLMAlignConfig(tiny_arch=args.arch, env_ids=[env_id], env_kwargs=env_kwargs or {}, seed=args.seed,
                            progress_bar=False, output_dir="", **steps)
    line = f"_max{env_kwargs['max_position']}" if env_kwargs and "max_position" in env_kwargs else ""
    name = (f"aligned_{env_id.rsplit('/', 1)[-1]}{line}__ex{config.num_examples}{'_fit' if config.projector_fit else ''}"
            f"_p{config.projector_steps}_l{config.language_steps}_f{config.full_steps}"
            f"_n{config.output_norm_lr_factor:g}_lr{config.learning_rate:g}")
    out = args.work_dir / name
    if not (out / "align_summary.json").is_file():
        config.output_dir = str(out)
        run_alignment(config)
    return out


def warm_start(args: argparse.Namespace, env_id: str, use_cot: bool, show_state: bool = True,
               env_kwargs: dict[str, Any] | None = None) -> Path:
    """SFT the tiny model on demonstrations with deliberate mistakes (cached in the work dir).

    Image-only warm starts begin from :func:`aligned_model` (the tiny model that reads the image)
    and train the language model's layers alone (``language_only``: a whole-model SFT at this
    learning rate erased the reading, measured: the warm start's read-out fell to the blank
    image's, 28% / 22%); the others start from the plain tiny model.
    """
    from vlm_agent.demo.tiny_models import make_tiny_model
    from vlm_agent.training.sft import VLMSFTConfig, run_sft

    # The SFT settings are part of the name so that a cached warm start is reused only for equal settings.
    learning_rate = args.sft_lr if show_state else args.image_sft_lr
    line = "" if not env_kwargs else "_" + "_".join(f"{k}{v}" for k, v in sorted(env_kwargs.items()))
    name = (f"{env_id.rsplit('/', 1)[-1]}{line}__{'cot' if use_cot else 'action_only'}__warm_start"
            f"__demos{args.sft_demos}_ep{args.sft_epochs:g}_lr{learning_rate:g}_wrong{args.wrong_action_rate:g}")
    if not show_state:
        start = aligned_model(args, env_id, env_kwargs)
        # The aligned model's own summary in the name: a model aligned anew at the same path is not mistaken for the old.
        summary = hashlib.sha256((start / "align_summary.json").read_bytes()).hexdigest()[:10]
        name += f"__image_only_language_layers__{start.name}_{summary}"
    out = args.work_dir / name
    if (out / "sft_summary.json").is_file():
        return out
    if show_state:
        start = make_tiny_model(args.arch, args.work_dir / "tiny_random_model", seed=args.seed)
    run_sft(VLMSFTConfig(
        model_name_or_path=str(start), env_id=env_id, env_kwargs=env_kwargs or {}, num_demos=args.sft_demos,
        epochs=args.sft_epochs,
        learning_rate=learning_rate, wrong_action_rate=args.wrong_action_rate, use_cot=use_cot,
        show_state=show_state, seed=args.seed, output_dir=str(out), progress_bar=False,
        language_only=not show_state,  # keep the image tokens' meaning from the alignment
    ))
    return out


def evaluate(policy: Any, args: argparse.Namespace, variant: Variant, label: str, *, control: str = "image") -> Any:
    """Success rate etc. of a policy on held-out seeds (the variant's evaluation states), at the
    training temperature.

    ``control="blank"``: every image replaced by its background colour (`BlankImages`);
    ``"other state"``: by the image of another evaluation state (`OtherStateImages`, frames of
    held-out read-out states dealt from the seed after ``--seed``).
    """
    from vlm_agent.agents.blank import BlankImages, OtherStateImages
    from vlm_agent.agents.local_hf import LocalHFAgent
    from vlm_agent.demo.readout import held_out_examples
    from vlm_agent.evaluation.evaluate import evaluate_agent

    agent = LocalHFAgent(policy.eval(), name=label, seed=args.seed)
    if control == "blank":
        agent = BlankImages(agent)
    elif control == "other state":
        frames = held_out_examples(variant.env_id, 64, seed=args.seed + 1, env_kwargs=variant.env_kwargs("eval"))
        agent = OtherStateImages(agent, [e.image for e in frames], seed=args.seed)
    return evaluate_agent(
        agent, variant.env_id, episodes=args.eval_episodes, seed=args.seed, cot=variant.use_cot,
        num_envs=min(16, args.eval_episodes), show_state=variant.show_state, progress=False,
        env_kwargs=variant.env_kwargs("eval"),
    )


def ppo_config(args: argparse.Namespace, variant: Variant, model_dir: Path, run_dir: Path):
    from vlm_agent.training.ppo_config import VLMPPOConfig

    return VLMPPOConfig(
        model_name_or_path=str(model_dir), device="cpu", env_id=variant.env_id,
        env_kwargs=variant.env_kwargs("train"), seed=args.seed,
        use_cot=variant.use_cot, show_state=variant.show_state, cot_scale=variant.cot_scale,
        temperature=0.2, max_new_tokens=(160 if "Blackjack" in variant.env_id else 64) if variant.use_cot else 16,
        num_envs=args.num_envs, num_steps=args.num_steps, total_timesteps=args.ppo_steps,
        gamma=0.9, gae_lambda=0.95, clip_range=0.2, clip_range_value=0.2, ppo_epochs=2,
        mini_batch_size=16 if args.num_envs * args.num_steps % 16 == 0 else 4, gradient_accumulation_steps=1,
        learning_rate=5e-5, min_learning_rate=5e-6, max_grad_norm=1.0, value_head_learning_rate=1e-3,
        use_lora=False, language_only=not variant.show_state, save_every=1000, output_dir=str(run_dir), progress_bar=False, log_samples=2,
    )


def main(argv: list[str] | None = None) -> int:
    import torch

    torch.set_num_threads(1)
    from benchmarks.make_readme import source_commit
    from vlm_agent.demo.alignment import model_identity
    from vlm_agent.models.loading import ModelSettings
    from vlm_agent.models.policy import VLMPolicy
    from vlm_agent.models.settings import GenerationSettings
    from vlm_agent.training.ppo_trainer import VLMPPOTrainer

    args = parse_args(argv)
    commit = source_commit()
    if args.alfworld:
        return ppo_learning_alfworld.run_alfworld(args)
    if args.report_only:
        rows, curves = read_results(args.out_dir, "ppo_learning_quick" if args.quick else "ppo_learning")
        write_results(rows, curves, args, "ppo_learning_quick" if args.quick else "ppo_learning")
        return 0
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "ppo_learning_quick" if args.quick else "ppo_learning"
    variants = [v for v in VARIANTS if args.variants is None or v.name in args.variants]
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    if args.variants is not None and (args.out_dir / f"{stem}.csv").is_file():
        # Rerunning some variants keeps the other variants' earlier results.
        old_rows, old_curves = read_results(args.out_dir, stem)
        rows = [row for row in old_rows if row["variant"] not in args.variants]
        curves = [point for point in old_curves if point["variant"] not in args.variants]
    for variant in variants:
        started = time.perf_counter()
        model_dir = warm_start(args, variant.env_id, variant.use_cot, variant.show_state, variant.env_kwargs("train"))
        sft_seconds = time.perf_counter() - started
        run_dir = args.work_dir / variant.name.replace(" ", "_").replace("=", "")
        if run_dir.exists():  # a rerun replaces this variant's earlier PPO run (its results are rewritten too)
            shutil.rmtree(run_dir)
        config = ppo_config(args, variant, model_dir, run_dir)
        settings = GenerationSettings(temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                                      cot_scale=config.cot_scale)
        before_policy = VLMPolicy.from_model(ModelSettings(str(model_dir), use_lora=False, device="cpu"), settings,
                                             seed=args.seed)
        before = evaluate(before_policy, args, variant, "warm start")
        del before_policy
        ppo_started = time.perf_counter()
        trainer = VLMPPOTrainer(config)
        trainer.train()
        ppo_seconds = time.perf_counter() - ppo_started
        after = evaluate(trainer.policy, args, variant, "after PPO")
        # The controls of an image-only row: the trained policy shown blank frames, and other states' images.
        control = None if variant.show_state else evaluate(trainer.policy, args, variant, "after PPO", control="blank")
        other = None if variant.show_state else evaluate(trainer.policy, args, variant, "after PPO",
                                                         control="other state")
        aligned = "" if variant.show_state else model_identity(aligned_model(args, variant.env_id,
                                                                             variant.env_kwargs("train")))
        row = {
            "variant": variant.name, "env_id": variant.env_id, "cot": variant.use_cot, "cot_scale": variant.cot_scale,
            "show_state": variant.show_state, "wrong_action_rate": args.wrong_action_rate,
            "ppo_env_steps": trainer.global_step, "ppo_updates": trainer.update,
            "before_success": before.success_rate, "before_ci_low": before.ci95[0], "before_ci_high": before.ci95[1],
            "after_success": after.success_rate, "after_ci_low": after.ci95[0], "after_ci_high": after.ci95[1],
            "gain_points": 100 * (after.success_rate - before.success_rate),
            "after_blank_success": "" if control is None else control.success_rate,
            "after_blank_ci_low": "" if control is None else control.ci95[0],
            "after_blank_ci_high": "" if control is None else control.ci95[1],
            "after_other_state_success": "" if other is None else other.success_rate,
            "after_other_state_ci_low": "" if other is None else other.ci95[0],
            "after_other_state_ci_high": "" if other is None else other.ci95[1],
            "env_kwargs": json.dumps(variant.env_kwargs("train")), "aligned_model": aligned, "commit": commit,
            "before_return": before.mean_return, "after_return": after.mean_return,
            "before_invalid": before.invalid_rate, "after_invalid": after.invalid_rate,
            "eval_episodes": args.eval_episodes, "sft_seconds": round(sft_seconds, 1), "ppo_seconds": round(ppo_seconds, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        for metrics in trainer.history:
            curves.append({"variant": variant.name, **{k: metrics[k] for k in (
                "update", "global_step", "charts/success_rate", "charts/episode_return", "charts/invalid_action_rate",
                "losses/policy_loss", "losses/value_loss", "losses/approx_kl", "losses/clip_fraction")}})
        write_results(rows, curves, args, stem)
    return 0


def read_results(out_dir: Path, stem: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows and curves of an earlier run, numbers parsed back from the CSVs."""

    def parse(value: str) -> Any:
        if value in ("True", "False"):
            return value == "True"
        try:
            return float(value)
        except ValueError:
            return value

    def load(path: Path) -> list[dict[str, Any]]:
        with open(path, newline="") as handle:
            return [{key: parse(value) for key, value in row.items()} for row in csv.DictReader(handle)]

    return load(out_dir / f"{stem}.csv"), load(out_dir / f"{stem}_curves.csv")


NOTES = """
## What this shows, and what limits it

The table above is this script's output. The remarks below come from diagnostic runs made while
the benchmark was built (not reproduced by this script):

- With the state's text in the prompt, SFT at lr 3e-3 for 768 steps (512 demonstrations x 12 epochs,
  batch 8) teaches the 1.3M-parameter tiny `qwen2_vl` to copy the state into its answer; trained on
  correct answers only it won 85% of 150 held-out NumberLine episodes (random play: ~60%). The loss
  sits at ~0.2 (the read-out digits at chance) for ~500 steps and only then drops: fewer steps, or
  lr 1e-3 / 6e-3 / 1e-2, leave a warm start that ignores the state, and PPO then has nothing to
  improve (earlier versions of this benchmark: +2 points).
- The NumberLine CoT warm start (20% wrong actions) reads the state out correctly but mostly reasons
  to the wrong move; PPO corrects the reasoning for every lambda. lambda=0 (thought tokens
  unweighted) let more unusable answers through.
- The action-only prompt gives PPO only the answer's action token to learn from, and no read-out
  of the state before it; in the table its success barely moves within this budget.
- Blackjack's best play (basic strategy) wins ~43% of hands and always standing ~38%: the ceiling
  for any gain over the warm start.
- Without the state's text the plain tiny model cannot read the images (random 2-layer vision
  tower, 112 px), so the text-state rows give it the state as text (`show_state`); the paper's 89.4%
  on NumberLine reads the image with LLaVA-1.6-7B. The image-only variants start from a model with
  legible vision settings aligned to read NumberLine's image (`vlm-agent align`; its 100% read-out
  was measured on the 30 states of NumberLine 0..5, all of which it had trained on), whose SFT then trains the language model's
  layers alone (`language_only`): a whole-model SFT at lr 3e-3 erased the reading (its warm start
  read 28% / 22% of held-out states, the same as from a blank image, and PPO gained +4 points).
  A `language_only` SFT at lr 3e-3 still lost the target: its warm start read the current number
  from the image in 100% of 64 held-out states but the target number in 33% (blank image: 12% /
  22%), and no image-only row gained (lambda 0.5: -12 points). At lr 1e-3 (`--image-sft-lr`, the
  default) the warm start reads both in 100% of them, and nothing from a blank image (0% / 0%).
  A PPO run that trains every parameter (lr 5e-5, 8 updates) then erased the reading in turn (the
  lambda=0.5 policy after PPO read 12% / 36%, blank 12% / 14%; no image-only row gained). The
  image-only rows therefore run PPO on the language model's layers alone (`language_only`): the
  lambda=0.5 policy after PPO reads 100% / 94% of 64 held-out states (blank image: 5% / 41%, the
  most frequent target's share), and its success falls to the blank-image column without the
  image. The action-only row gains nothing from the image (blank image: the same success).
  The Blackjack image-only row starts from the model benchmarks/results/tiny_vlm_readout_blackjack.md
  measured (4096 images, the projector fit, 1500 language steps, final norm at 10x; dealer card
  100%, player cards 90.3% per card, player total 21%): `python -m benchmarks.tiny_vlm_readout
  --envs gym_cards/Blackjack-v0 --num-examples 4096 --projector-steps 0 --projector-fit
  --language-steps 1500 --output-norm-lr-factor 10 --seeds 0 --stem tiny_vlm_readout_blackjack`,
  then this script with `--variants "Blackjack CoT lambda=0.5 (image only)" --aligned-model
  runs/tiny_vlm_readout/aligned_seed0` (without `--aligned-model` it aligns with the same
  settings, `ALIGN_SETTINGS`, at `--seed`). Its gain over the warm start is within the noise
  (intervals overlap), but shown blank frames the trained policy falls to 25%, below its 41%
  with the image: it plays from the cards it reads. The previous model (no projector fit: player
  cards 88.5%, total 41%) gave 36.0% -> 40.7% with a blank-image control of 32.7%. The tiny policy
  must add the cards up itself, and basic strategy's ~43% caps any gain. A variant without a row
  has not been run.
- The unseen-pairs row (NumberLine 0..9, aligned model c53caa71702a of
  benchmarks/results/tiny_vlm_readout.md, which reads 100% / 100% of the unseen pairs) wins none
  of its held-out episodes before or after PPO, and 49-55% with blank or other states' images.
  Its split holds out one side of the marker per evaluation target (`evaluation_pair`: the only
  split that no move crosses), so in every training episode of targets 1, 3, 6 and 8 the right
  move follows from the target alone; the tiny policy learned that shortcut and plays the
  trained side's move on the held-out side, losing every episode (return -18: wrong moves until
  the step limit). It acts on what it reads (other states' images change its play), but on these
  pairs it is not yet a test of comparing current and target.
- PPO minutes depend on what else ran on the 2 shared cores.
"""


def write_results(rows: list[dict[str, Any]], curves: list[dict[str, Any]], args: argparse.Namespace, stem: str) -> None:
    out = args.out_dir
    with open(out / f"{stem}.csv", "w", newline="") as handle:
        # Every row's columns (rows kept from an earlier run may lack newer ones: left empty).
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in rows for key in row)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    with open(out / f"{stem}_curves.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(curves[0]))
        writer.writeheader()
        writer.writerows(curves)

    def pct(value: float, low: float, high: float) -> str:
        return f"{100 * value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"

    lines = [
        "# PPO learning on CPU with a tiny model",
        "",
        (f"Tiny `{args.arch}` model (random weights, built offline), warm-started by SFT on "
        f"{args.sft_demos} expert demonstrations with {100 * args.wrong_action_rate:.0f}% deliberately wrong actions, "
        f"then PPO for {args.ppo_steps} environment steps ({args.num_envs} envs x {args.num_steps} steps per update). "
        f"Success rate in % with Wilson 95% interval on {args.eval_episodes} held-out episodes, sampling at T=0.2 (the paper's temperature). "
        "Observation: 'text + image' puts the state's text in the prompt as well (`show_state`); 'image only' "
        "shows the image alone, to a tiny model with legible vision settings aligned to read it first "
        "(`vlm_agent.demo.alignment`, benchmarks/results/tiny_vlm_readout.md)."),
        "",
        "The blank-image and other-state columns are the controls of the image-only rows: the policy after PPO "
        "shown frames of the background colour (`vlm_agent.agents.blank.BlankImages`), or the image of another "
        "evaluation state (`OtherStateImages`), same prompts and seeds. The unseen-pairs row trains (alignment, SFT, "
        "PPO) on NumberLine's `split=\"train\"` states and is evaluated on its `split=\"eval\"` states, which no "
        "training episode visits (`gym_cards.envs.number_line.evaluation_pair`). Model: the aligned model's weights "
        "hash (`vlm_agent.demo.alignment.model_identity`); commit: the code that measured the row (rows without "
        "them predate the stamp).",
        "",
        "| variant | observation | warm start | after PPO | gain (points) | after PPO, blank image | after PPO, other state | return before -> after | invalid before -> after | PPO minutes | model | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        blank, other = (("-" if row.get(f"after_{name}_success", "") == "" else
                         pct(row[f"after_{name}_success"], row[f"after_{name}_ci_low"], row[f"after_{name}_ci_high"]))
                        for name in ("blank", "other_state"))
        lines.append(
            f"| {row['variant']} | {'text + image' if row['show_state'] else 'image only'} | "
            f"{pct(row['before_success'], row['before_ci_low'], row['before_ci_high'])} | "
            f"{pct(row['after_success'], row['after_ci_low'], row['after_ci_high'])} | {row['gain_points']:+.1f} | "
            f"{blank} | {other} | "
            f"{row['before_return']:.2f} -> {row['after_return']:.2f} | "
            f"{100 * row['before_invalid']:.1f}% -> {100 * row['after_invalid']:.1f}% | {row['ppo_seconds'] / 60:.1f} | "
            f"{row.get('aligned_model') or '-'} | {row.get('commit') or '-'} |"
        )
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n" + NOTES)
    plot(rows, curves, out / f"{stem}.png")


def plot(rows: list[dict[str, Any]], curves: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for name in dict.fromkeys(c["variant"] for c in curves):
        points = [c for c in curves if c["variant"] == name]
        left.plot([p["global_step"] for p in points], [p["charts/success_rate"] for p in points], marker="o",
                  markersize=3, label=name)
    left.set_xlabel("environment steps")
    left.set_ylabel("training success rate")
    left.set_title("Success rate of training episodes")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    positions = range(len(rows))
    width = 0.38
    for offset, key, label in ((-width / 2, "before", "warm start"), (width / 2, "after", "after PPO")):
        values = [100 * row[f"{key}_success"] for row in rows]
        errors = [[100 * (row[f"{key}_success"] - row[f"{key}_ci_low"]) for row in rows],
                  [100 * (row[f"{key}_ci_high"] - row[f"{key}_success"]) for row in rows]]
        right.bar([p + offset for p in positions], values, width, yerr=errors, capsize=3, label=label)
    controls = [(p, row) for p, row in zip(positions, rows) if row.get("after_blank_success", "") != ""]
    if controls:
        right.scatter([p + width / 2 for p, _ in controls], [100 * row["after_blank_success"] for _, row in controls],
                      marker="x", color="black", zorder=3, label="after PPO, blank image")
    others = [(p, row) for p, row in zip(positions, rows) if row.get("after_other_state_success", "") != ""]
    if others:
        right.scatter([p + width / 2 for p, _ in others], [100 * row["after_other_state_success"] for _, row in others],
                      marker="+", color="red", zorder=3, label="after PPO, other state's image")
    right.set_xticks(list(positions), [row["variant"].replace(" ", "\n", 1) for row in rows], fontsize=7)
    right.set_ylabel("held-out success rate (%)")
    right.set_title("Before and after PPO (95% intervals)")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
