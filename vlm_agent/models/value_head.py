"""The critic: an MLP on the VLM's last hidden state at the final prompt token (RL4VLM, Sec. 4.3).

The paper's head is ``4096 -> 1024 -> 512 -> 1`` with ReLU on llava-v1.6-mistral-7b; for other
backbones the widths scale with the hidden size (:func:`default_value_head_widths`). The head is
kept in float32 whatever the backbone's dtype, and saved next to the LoRA adapter as
``value_head.safetensors`` + ``value_head.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

VALUE_HEAD_WEIGHTS = "value_head.safetensors"
VALUE_HEAD_CONFIG = "value_head.json"


def default_value_head_widths(hidden_size: int) -> tuple[int, int]:
    """Hidden widths of the value MLP: ``(min(1024, h), min(512, h // 2))``.

    For the paper's 4096-wide backbone this is its ``(1024, 512)``; a 128-wide tiny model gets
    ``(128, 64)`` instead of a head 60 times bigger than its own layers.
    """
    if hidden_size < 2:
        raise ValueError(f"hidden_size must be >= 2, got {hidden_size}")
    return min(1024, hidden_size), min(512, hidden_size // 2)


class ValueHead(nn.Module):
    """``hidden -> widths[0] -> widths[1] -> 1`` MLP with ReLU, returning one value per row.

    Args:
        hidden_size: width of the backbone's hidden state.
        widths: hidden widths; default :func:`default_value_head_widths`.
    """

    def __init__(self, hidden_size: int, widths: Sequence[int] | None = None) -> None:
        super().__init__()
        self.hidden_size = int(hidden_size)
        self.widths = tuple(int(w) for w in (widths or default_value_head_widths(hidden_size)))
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"value head widths must be positive integers, got {self.widths}")
        layers: list[nn.Module] = []
        previous = self.hidden_size
        for width in self.widths:
            layers += [nn.Linear(previous, width), nn.ReLU()]
            previous = width
        layers.append(nn.Linear(previous, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden`` ``[B, hidden_size]`` (any float dtype) -> values ``[B]`` float32."""
        return self.mlp(hidden.float()).squeeze(-1)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``value_head.safetensors`` and ``value_head.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        save_file(state, str(directory / VALUE_HEAD_WEIGHTS))
        config = {"hidden_size": self.hidden_size, "widths": list(self.widths)}
        (directory / VALUE_HEAD_CONFIG).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ValueHead:
        """Load a head written by :meth:`save_pretrained`; clear errors for missing or corrupt files."""
        directory = Path(directory)
        config_path, weights_path = directory / VALUE_HEAD_CONFIG, directory / VALUE_HEAD_WEIGHTS
        if not config_path.is_file() or not weights_path.is_file():
            raise FileNotFoundError(
                f"no value head in {directory}: expected {VALUE_HEAD_CONFIG} and {VALUE_HEAD_WEIGHTS} "
                "(written by VLMPolicy.save_pretrained); pass a policy checkpoint directory"
            )
        try:
            config = json.loads(config_path.read_text())
            head = cls(int(config["hidden_size"]), config["widths"])
            head.load_state_dict(load_file(str(weights_path)))
        except (ValueError, KeyError, TypeError, RuntimeError, OSError, SafetensorError) as error:
            raise ValueError(
                f"value head checkpoint in {directory} is unreadable ({error}); "
                "re-save it with VLMPolicy.save_pretrained"
            ) from error
        return head
