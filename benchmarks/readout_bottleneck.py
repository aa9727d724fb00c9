"""Where does a tiny VLM fail to read the image? One read-out task, five conditions, one budget.

`benchmarks/tiny_vlm_readout.py` found the aligned tiny model's NumberLine read-out at chance.
This script separates the two halves of reading: do the image tokens carry the state (the eyes),
and can the language model learn to fetch it from them (the lookup)? The same tiny `qwen2_vl`
(legible vision settings, random init, same seed), the same training images, batches and
optimizer settings; only what the model is shown changes:

- `state as text`: the state written into the prompt after the instruction, a blank image.
- `image`: the image alone (what `vlm-agent align` trains).
- `image, value tokens = word embeddings` (oracle): for each read-out field, the image token whose
  features best tell that field's value apart (`vlm_agent.demo.readout_slots.find_readout_slots`) is
  replaced by the word embedding of the value: the eyes made perfect, the lookup left to learn.
- `image, value tokens = field name + value embeddings` (oracle): as above, the replacement being
  the sum of the (normalised) embeddings of the field's name and of its value, so that a token
  announces which field it holds.
- a linear probe on the frozen random image features (no training of the model at all).

Accuracy is the exact match of the whole read-out on held-out states (evaluation seeds >= 10**9)
under teacher forcing, which equals greedy decoding's exact match. The control is chance: the
share of the most frequent whole read-out among the held-out states, what the best constant
answer scores. The oracle rows inject the answer into the input by construction: they measure
the language model's lookup, not reading. `vlm-agent align` builds on what this measures (its
stage 1 trains the projector to produce the last condition's tokens from pixels).

    python -m benchmarks.readout_bottleneck            # ~12 CPU minutes
    python -m benchmarks.readout_bottleneck --quick    # smoke run of every condition

Writes `benchmarks/results/readout_bottleneck.{csv,md,png}`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.make_readme import RESULTS_DIR, machine_description, save_figure

CONDITIONS = ("state as text", "image", "image, value tokens = word embeddings",
              "image, value tokens = field name + value embeddings")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Tiny sizes: checks every condition in about a minute.")
    parser.add_argument("--env", default="gym_cards/NumberLine-v0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-examples", type=int, default=1024, help="Training images.")
    parser.add_argument("--eval-examples", type=int, default=64, help="Held-out images.")
    parser.add_argument("--steps", type=int, default=500, help="Optimizer steps per condition.")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--conditions", nargs="*", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/readout_bottleneck"))
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.num_examples, args.eval_examples, args.steps, args.eval_every = 128, 8, 4, 2
    args.stem = "readout_bottleneck_quick" if args.quick else "readout_bottleneck"
    return args


def state_prompt(values: dict[str, Any]) -> str:
    from vlm_agent.demo.readout import READOUT_PROMPT

    return READOUT_PROMPT + " State: " + ", ".join(f"{key}: {value}" for key, value in values.items())


def linear_probe(train: Any, train_y: Sequence[str], test: Any, test_y: Sequence[str], *, seed: int) -> float:
    """Held-out accuracy of a softmax regression on standardised frozen features."""
    import torch

    classes = sorted(set(train_y) | set(test_y))
    y = torch.tensor([classes.index(v) for v in train_y])
    mean, std = train.mean(0), train.std(0) + 1e-6
    x, xt = (train - mean) / std, (test - mean) / std
    generator = torch.Generator().manual_seed(seed)
    weight = (0.01 * torch.randn(x.shape[1], len(classes), generator=generator)).requires_grad_(True)
    optimizer = torch.optim.Adam([weight], lr=1e-2)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(x @ weight, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    predicted = (xt @ weight).argmax(1)
    return float(np.mean([classes[int(p)] == t for p, t in zip(predicted, test_y)]))


class Condition:
    """How one condition shows an example to the model (prompt, image, injected image tokens)."""

    def __init__(self, name: str, model: Any, processor: Any, slots: dict[str, int]) -> None:
        self.name, self.model, self.processor, self.slots = name, model, processor, slots

    def inputs(self, examples: Sequence[Any]) -> tuple[dict[str, Any], Any, Any]:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        from vlm_agent.agents.blank import blank_like
        from vlm_agent.demo.readout import readout_inputs

        if self.name == "state as text":
            return readout_inputs(self.processor, examples, images=[blank_like(e.image) for e in examples],
                                  prompts=[state_prompt(e.values) for e in examples])
        inputs, targets, mask = readout_inputs(self.processor, examples)
        if self.name == "image":
            return inputs, targets, mask
        from vlm_agent.demo.readout_slots import image_tokens

        features = [f.clone() for f in image_tokens(self.model, self.processor, [e.image for e in examples])]
        for feature, example in zip(features, examples):
            for key, token in self.slots.items():
                feature[token] = self.injected(key, example.values[key])
        inputs.pop("pixel_values")
        inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=tuple(features))}
        return inputs, targets, mask

    def injected(self, key: str, value: Any) -> Any:
        from vlm_agent.demo.readout_slots import slot_target

        return slot_target(self.model, self.processor, key, None, value,
                           with_key=self.name != "image, value tokens = word embeddings")


def train_condition(name: str, model_dir: Path, examples: Sequence[Any], held_out: Sequence[Any], slots: dict[str, int],
                    args: argparse.Namespace, log: Any) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoModelForImageTextToText

    from vlm_agent.demo.readout import answer_loss, warmup_cosine
    from vlm_agent.models.loading import load_processor

    processor = load_processor(str(model_dir))
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.float32)
    condition = Condition(name, model, processor, slots)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    scheduler = warmup_cosine(optimizer, args.steps)
    rng = np.random.default_rng(args.seed)
    curve: list[dict[str, Any]] = []
    torch.manual_seed(args.seed)

    def measure(step: int) -> None:
        model.eval()
        with torch.no_grad():
            loss, exact = answer_loss(model, *condition.inputs(held_out))
        curve.append({"condition": name, "step": step, "held_out_loss": float(loss),
                      "held_out_exact": float(exact.float().mean())})
        log(f"{name}: step {step}, held-out loss {float(loss):.3f}, exact read-out {100 * float(exact.float().mean()):.0f}%")

    measure(0)
    for step in range(1, args.steps + 1):
        model.train()
        batch = [examples[i] for i in rng.choice(len(examples), args.batch_size, replace=False)]
        loss, _ = answer_loss(model, *condition.inputs(batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % args.eval_every == 0 or step == args.steps:
            measure(step)
    return curve


def main(argv: list[str] | None = None) -> int:
    import torch
    from transformers import AutoModelForImageTextToText

    torch.set_num_threads(1)
    from vlm_agent.demo.readout import held_out_examples, readout_examples
    from vlm_agent.demo.readout_slots import find_readout_slots, image_tokens
    from vlm_agent.demo.tiny_models import LEGIBLE_VISION, make_tiny_model
    from vlm_agent.models.loading import load_processor

    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model_dir = make_tiny_model("qwen2_vl", args.work_dir / "tiny_random_model", seed=args.seed, vision=LEGIBLE_VISION)
    examples = readout_examples(args.env, args.num_examples, seed=args.seed)
    held_out = held_out_examples(args.env, args.eval_examples, seed=args.seed)

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {line}", flush=True)

    processor = load_processor(str(model_dir))
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        probe_train = torch.stack(image_tokens(model, processor, [e.image for e in examples[:512]]))
        probe_test = torch.stack(image_tokens(model, processor, [e.image for e in held_out]))
    slots = {slot.key: slot.token for slot in find_readout_slots(probe_train, examples[:512]) if slot.index is None}
    # Each field's probe reads its value token (all tokens where it has none): held-out states are
    # pairs no training image shows, which a probe over every token fits by the other field too.
    def features(tokens: Any, key: str) -> Any:
        return tokens[:, slots[key]] if key in slots else tokens.flatten(1)

    probe = {key: linear_probe(features(probe_train, key), [json.dumps(e.values[key]) for e in examples[:512]],
                               features(probe_test, key), [json.dumps(e.values[key]) for e in held_out], seed=args.seed)
             for key in examples[0].values}
    log(f"linear probe on the random model's image tokens: {probe}; value tokens {slots}")
    del model
    curves: list[dict[str, Any]] = []
    for name in args.conditions:
        curves += train_condition(name, model_dir, examples, held_out, slots, args, log)
    answers = [e.answer for e in held_out]
    chance = max(answers.count(a) for a in set(answers)) / len(answers)  # the best constant read-out
    write_results(curves, probe, slots, chance, args, time.perf_counter() - started)
    return 0


def write_results(curves: list[dict[str, Any]], probe: dict[str, float], slots: dict[str, int], chance: float,
                  args: argparse.Namespace, seconds: float) -> None:
    out = args.out_dir
    with open(out / f"{args.stem}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(curves[0]))
        writer.writeheader()
        writer.writerows(curves)
    lines = [
        "# Where the tiny VLM fails to read the image",
        "",
        (f"Tiny `qwen2_vl` (random init, 168 px, vision 64 x 2 layers, LM 128 x 4 layers), {args.env.split('/')[-1]}: "
         f"{args.num_examples} training states, {args.steps} AdamW steps per condition (batch {args.batch_size}, lr "
         f"{args.learning_rate:g}, cosine), whole model trained, seed {args.seed}; exact match of the whole read-out on "
         f"{args.eval_examples} held-out states (teacher-forced argmax = greedy decoding). {seconds / 60:.1f} minutes in all."),
        "",
        "Linear probe on the frozen random image tokens (held-out accuracy): "
        + ", ".join(f"{key} {100 * value:.0f}%" for key, value in probe.items())
        + f". Value tokens picked for the oracle rows: {slots}. Chance (most frequent values): {100 * chance:.1f}%.",
        "",
        "| condition | exact read-out at the end (%) | first step at >= 95% | held-out loss at the end |",
        "|---|---:|---:|---:|",
    ]
    for name in args.conditions:
        points = [p for p in curves if p["condition"] == name]
        reached = next((p["step"] for p in points if p["held_out_exact"] >= 0.95), None)
        lines.append(f"| {name} | {100 * points[-1]['held_out_exact']:.1f} | {'not reached' if reached is None else reached} | "
                     f"{points[-1]['held_out_loss']:.3f} |")
    lines += ["", "The oracle rows put the answer into the image tokens: they test the language model's lookup, not reading.",
              "", machine_description(), ""]
    (out / f"{args.stem}.md").write_text("\n".join(lines))
    plot(curves, args, chance, out / f"{args.stem}.png")


def plot(curves: list[dict[str, Any]], args: argparse.Namespace, chance: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for name in args.conditions:
        points = [p for p in curves if p["condition"] == name]
        axis.plot([p["step"] for p in points], [100 * p["held_out_exact"] for p in points], marker="o", markersize=3,
                  label=name)
    axis.axhline(100 * chance, color="grey", linestyle="--", label="chance")
    axis.set_xlabel("training step")
    axis.set_ylabel("held-out exact read-out (%)")
    axis.set_title("What the tiny VLM learns to read, by what it is shown")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    save_figure(figure, path)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
