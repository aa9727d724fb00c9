"""Helpers shared by the model test modules (tests/ is on sys.path under pytest's default import mode)."""

from __future__ import annotations

from pathlib import Path


def changed_weights(before: str | Path, after: str | Path) -> set[str]:
    """Names of the weights that differ between two saved models."""
    import torch
    from transformers import AutoModelForImageTextToText

    first = AutoModelForImageTextToText.from_pretrained(before).state_dict()
    second = AutoModelForImageTextToText.from_pretrained(after).state_dict()
    return {name for name in first if not torch.equal(first[name], second[name])}


def assert_language_layers_alone(changed: set[str]) -> None:
    """The language model's layers moved; the vision side, word embeddings and output head did not."""
    assert any(name.startswith("model.language_model.layers.") for name in changed), changed
    assert not any("visual" in name or "embed_tokens" in name or "lm_head" in name for name in changed), changed
