"""Data-parallel helpers: one all-reduce that averages the gradients of every process, and the sums
and means of numbers over processes that every decision and metric is taken on.
"""

from __future__ import annotations

from typing import Any

import torch


def average_gradients_across_processes(parameters: list[torch.nn.Parameter], world_size: int) -> None:
    """Replace each gradient with its mean over the processes, in one flattened all-reduce.

    One collective over one buffer instead of one per parameter (hundreds for LoRA on every linear
    layer); a parameter without a gradient on this process contributes zeros, so every process
    sends the same layout.
    """
    import torch.distributed as dist

    if not parameters:
        return
    gradients = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in gradients])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for parameter, gradient in zip(parameters, gradients, strict=True):
        size = gradient.numel()
        parameter.grad = flat[offset : offset + size].view_as(parameter).to(parameter.dtype)
        offset += size


def sum_across_processes(tensor: torch.Tensor, world_size: int, device: Any) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all processes (the tensor itself with one process)."""
    if world_size == 1:
        return tensor
    import torch.distributed as dist

    reduced = tensor.to(device)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.cpu()


def mean_across_processes(value: float, world_size: int, device: Any) -> float:
    """The mean of ``value`` over all processes (the value itself with one process)."""
    if world_size == 1:
        return value
    total = sum_across_processes(torch.tensor([value], dtype=torch.float64), world_size, device)
    return float(total[0]) / world_size
