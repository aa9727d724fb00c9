"""Shared pytest fixtures.

``tiny_model_dir`` (session-scoped factory) builds each tiny, randomly initialised VLM at most once
per test session and returns its directory::

    def test_something(tiny_model_dir):
        path = tiny_model_dir("qwen2_vl")  # or "qwen2_5_vl", "llava_next", "idefics3", "gemma3"
        policy = VLMPolicy.from_model(ModelSettings(path, lora_r=8, lora_alpha=16))

Treat the directory as read-only (copy it to change it). Asking for the fixture also sets
``torch.set_num_threads(1)``: on 2-core machines, 2 threads made generation up to 100x slower
when the other core was busy. torch is imported only by tests that ask for it, so the env tests
stay light.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# No test may reach the model hub; everything is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def torch_single_thread() -> None:
    """Import torch with one intra-op thread (see the module docstring)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, torch_single_thread: None) -> Callable[[str], Path]:
    """Factory ``tiny_model_dir(arch) -> Path``: a tiny random model of ``arch``, built once per session (seed 0)."""
    from vlm_agent.demo.tiny_models import make_tiny_model

    root = tmp_path_factory.mktemp("tiny_models")
    built: dict[str, Path] = {}

    def build(arch: str) -> Path:
        if arch not in built:
            built[arch] = make_tiny_model(arch, root / arch, seed=0)
        return built[arch]

    return build
