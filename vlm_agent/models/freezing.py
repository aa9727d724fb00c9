"""Which parameters train: the vision tower, the projector and the language model's layers of an
image-text-to-text model told apart by name (:func:`train_only`), and dropout switched off for RL
(:func:`disable_dropout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

#: Parameter-name parts of the vision tower and the projector of the five tiny architectures
#: (Qwen's ``visual`` holds its merger; LLaVA-NeXT's projector; Idefics3's connector; Gemma 3's
#: projector): frozen while the language model learns (stage 2).
VISION_PARAMETER_PARTS = ("visual.", "vision_tower.", "vision_model.", "multi_modal_projector.", "connector.",
                          "image_newline")

#: Parameter-name parts of the projector alone (Qwen's merger, LLaVA-NeXT's and Gemma 3's
#: projector, Idefics3's connector): what stage 1 trains.
PROJECTOR_PARAMETER_PARTS = ("visual.merger.", "multi_modal_projector.", "connector.")


def _named_parameters(model: Any, parts: Sequence[str], what: str) -> list[Any]:
    chosen = [p for name, p in model.named_parameters() if any(part in name for part in parts)]
    if not chosen:
        raise ValueError(f"found no {what} parameters in {type(model).__name__} (looked for {tuple(parts)})")
    return chosen


def vision_parameters(model: Any) -> list[Any]:
    """The vision tower's and projector's parameters (see :data:`VISION_PARAMETER_PARTS`)."""
    return _named_parameters(model, VISION_PARAMETER_PARTS, "vision")


def projector_parameters(model: Any) -> list[Any]:
    """The projector's parameters (see :data:`PROJECTOR_PARAMETER_PARTS`): stage 1."""
    return _named_parameters(model, PROJECTOR_PARAMETER_PARTS, "projector")


def language_parameters(model: Any) -> list[Any]:
    """The language model's layers: every parameter but the vision side and the word embeddings (stage 2)."""
    frozen = {id(p) for p in vision_parameters(model)}
    frozen |= {id(m.weight) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    return [p for p in model.parameters() if id(p) not in frozen]


def train_only(model: Any, parameters: Sequence[Any]) -> None:
    """Let gradients reach ``parameters`` alone (``requires_grad``); the rest of ``model`` is frozen."""
    chosen = {id(p) for p in parameters}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)


def disable_dropout(module: torch.nn.Module) -> None:
    """Set the probability of every `torch.nn.Dropout` in `module` to 0 (as TRL's RL trainers do).

    PPO compares the log-prob of an answer when it was sampled (eval mode) with the log-prob the
    update's forward gives it (train mode); any dropout makes that ratio noise. Modules that read a
    dropout rate from the model config instead (e.g. `attention_dropout`) are 0 in every supported
    architecture's published config; the test suite checks train-mode and eval-mode scores agree.
    """
    for layer in module.modules():
        if isinstance(layer, torch.nn.Dropout):
            layer.p = 0.0
