"""What the policy stores per sampled answer, and how stored answers become one forward's inputs.

A :class:`PolicySample` is one observation and the answer sampled for it, on CPU and without
padding; :func:`collate_samples` pads a mini-batch of them back into model inputs (prompts
left-padded, completions right-padded) for :meth:`vlm_agent.models.policy.VLMPolicy.evaluate`.
:func:`split_image_inputs` and :func:`collate_image_inputs` cut a processor batch's image tensors
into per-observation pieces and join them again, for every supported architecture's layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

#: Processor outputs that hold one entry per prompt token; extended over the completion.
PER_TOKEN_KEYS = ("attention_mask", "mm_token_type_ids", "token_type_ids")

@dataclass
class PolicySample:
    """One observation and the answer sampled for it: enough to run the forward again (CPU tensors).

    Attributes:
        prompt_ids: ``[P]`` prompt token ids, without padding.
        prompt_token_inputs: per-token side inputs of the prompt (``mm_token_type_ids``, ...), ``[P]`` each.
        image_inputs: this observation's image tensors as the processor made them, with a leading
            image axis (Qwen: flat ``pixel_values`` ``[patches, dim]`` + ``image_grid_thw`` ``[1, 3]``;
            LLaVA-NeXT: ``pixel_values`` ``[1, crops, 3, H, W]`` + ``image_sizes`` ``[1, 2]``).
        completion_ids: ``[C]`` generated ids, up to and including the first EOS.
        thought_mask: ``[C]`` bool, CoT tokens (see :mod:`vlm_agent.algorithms.cot_log_prob`).
        action_mask: ``[C]`` bool, action tokens.
        log_prob: CoT-scaled log-prob when it was sampled (the PPO "old" log-prob).
        value: the value head's estimate when it was sampled.
        text: the answer decoded from ``completion_ids`` (special tokens skipped): what the parser
            read. Only for reading; the trainer scores ``completion_ids`` themselves.
        engine_log_prob: with an engine outside the trainer (vLLM), the CoT-scaled log-prob the engine
            reported for the answer it sampled (``log_prob`` is then the trainer's own forward).
        engine_token_log_probs: ``[C]`` the engine's per-token log-probs of ``completion_ids``.
        trainer_token_log_probs: ``[C]`` the trainer forward's per-token log-probs of the same ids.
    """

    prompt_ids: torch.Tensor
    prompt_token_inputs: dict[str, torch.Tensor]
    image_inputs: dict[str, torch.Tensor]
    completion_ids: torch.Tensor
    thought_mask: torch.Tensor
    action_mask: torch.Tensor
    log_prob: float
    value: float
    text: str = ""
    engine_log_prob: float | None = None
    engine_token_log_probs: torch.Tensor | None = None
    trainer_token_log_probs: torch.Tensor | None = None


@dataclass
class CollatedBatch:
    """Stored samples padded into model inputs: prompts left-padded, completions right-padded."""

    model_inputs: dict[str, torch.Tensor]
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    thought_mask: torch.Tensor
    action_mask: torch.Tensor
    prompt_length: int = field(default=0)


def collate_samples(samples: Sequence[PolicySample], pad_token_id: int) -> CollatedBatch:
    """Pad stored samples into one forward's inputs (prompts left, completions right)."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    prompt_length = max(len(s.prompt_ids) for s in samples)
    completion_length = max(len(s.completion_ids) for s in samples)
    rows = len(samples)

    def left_pad(values: list[torch.Tensor], fill: int) -> torch.Tensor:
        out = torch.full((rows, prompt_length), fill, dtype=values[0].dtype)
        for i, value in enumerate(values):
            out[i, prompt_length - len(value) :] = value
        return out

    def right_pad(values: list[torch.Tensor], fill: int | bool) -> torch.Tensor:
        out = torch.full((rows, completion_length), fill, dtype=values[0].dtype)
        for i, value in enumerate(values):
            out[i, : len(value)] = value
        return out

    prompt_ids = left_pad([s.prompt_ids for s in samples], pad_token_id)
    prompt_mask = left_pad([torch.ones(len(s.prompt_ids), dtype=torch.long) for s in samples], 0)
    completion_ids = right_pad([s.completion_ids for s in samples], pad_token_id)
    completion_mask = right_pad([torch.ones(len(s.completion_ids), dtype=torch.bool) for s in samples], False)
    model_inputs: dict[str, torch.Tensor] = {
        "input_ids": torch.cat([prompt_ids, completion_ids], dim=1),
        "attention_mask": torch.cat([prompt_mask, completion_mask.long()], dim=1),
    }
    # Every per-token side input must cover the completion too (text tokens: type 0).
    for key in samples[0].prompt_token_inputs:
        prompt_part = left_pad([s.prompt_token_inputs[key] for s in samples], 0)
        completion_part = torch.zeros((rows, completion_length), dtype=prompt_part.dtype)
        model_inputs[key] = torch.cat([prompt_part, completion_part], dim=1)
    model_inputs.update(collate_image_inputs([s.image_inputs for s in samples]))
    return CollatedBatch(
        model_inputs=model_inputs,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        thought_mask=right_pad([s.thought_mask for s in samples], False),
        action_mask=right_pad([s.action_mask for s in samples], False),
        prompt_length=prompt_length,
    )


def split_image_inputs(image_inputs: dict[str, torch.Tensor], rows: int) -> list[dict[str, torch.Tensor]]:
    """Split a batch's image tensors into one dict per row (one image per row), on CPU.

    Qwen2-VL / Qwen2.5-VL flatten all images' patches into one ``pixel_values`` ``[sum, dim]``:
    row ``i`` owns ``prod(image_grid_thw[i])`` consecutive patches. Every other tensor (LLaVA-NeXT
    ``pixel_values`` ``[N, crops, 3, H, W]`` and ``image_sizes``, Idefics3 ``pixel_attention_mask``)
    has the image axis first.
    """
    per_row: list[dict[str, torch.Tensor]] = [{} for _ in range(rows)]
    grid = image_inputs.get("image_grid_thw")
    for name, tensor in image_inputs.items():
        tensor = tensor.detach().cpu()
        if name == "pixel_values" and grid is not None:
            counts = grid.cpu().prod(-1).tolist()
            pieces = torch.split(tensor, counts, dim=0)
        else:
            if tensor.shape[0] != rows:
                raise ValueError(
                    f"cannot split image input {name!r} of shape {tuple(tensor.shape)} into {rows} observations; "
                    "pass exactly one image per prompt"
                )
            pieces = torch.split(tensor, 1, dim=0)
        for row, piece in enumerate(pieces):
            per_row[row][name] = piece.clone()
    return per_row


def collate_image_inputs(per_row: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate per-row image tensors along the image axis.

    Tensors whose later dims differ (LLaVA-NeXT images with different crop counts) are zero-padded
    to the largest; the model reads the real count from ``image_sizes``.
    """
    merged: dict[str, torch.Tensor] = {}
    for name in per_row[0]:
        tensors = [row[name] for row in per_row]
        if any(t.shape[1:] != tensors[0].shape[1:] for t in tensors) and tensors[0].ndim > 1:
            target = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].ndim)]
            padded = []
            for t in tensors:
                out = t.new_zeros((t.shape[0], *target))
                out[(slice(None), *(slice(0, s) for s in t.shape[1:]))] = t
                padded.append(out)
            tensors = padded
        merged[name] = torch.cat(tensors, dim=0)
    return merged
