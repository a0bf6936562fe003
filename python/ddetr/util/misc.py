"""The padded image batch (NestedTensor), inverse_sigmoid, and distributed helpers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


class NestedTensor:
    """A batch of differently sized images padded to one size: `tensors` (B, C, H, W) and
    `mask` (B, H, W), True on padding. Images sit in the top-left corner."""

    def __init__(self, tensors: torch.Tensor, mask: torch.Tensor | None):
        self.tensors = tensors
        self.mask = mask

    def to(self, device, non_blocking: bool = False) -> NestedTensor:
        mask = None if self.mask is None else self.mask.to(device, non_blocking=non_blocking)
        return NestedTensor(self.tensors.to(device, non_blocking=non_blocking), mask)

    def decompose(self):
        return self.tensors, self.mask

    @property
    def device(self) -> torch.device:
        return self.tensors.device

    def __len__(self) -> int:
        return len(self.tensors)

    def __repr__(self) -> str:
        mask = None if self.mask is None else tuple(self.mask.shape)
        return f"NestedTensor(tensors={tuple(self.tensors.shape)}, mask={mask})"


def nested_tensor_from_tensor_list(tensor_list: Sequence[torch.Tensor], size_divisibility: int = 0) -> NestedTensor:
    """Pad (C, H, W) tensors with zeros to the largest H and W (rounded up to a multiple of
    `size_divisibility` when > 0) and build the padding mask."""
    if len(tensor_list) == 0:
        raise ValueError("tensor_list is empty: need at least one (C, H, W) image")
    for i, t in enumerate(tensor_list):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"tensor_list[{i}] must be a (C, H, W) tensor, got {shape}")
    c = tensor_list[0].shape[0]
    if any(t.shape[0] != c for t in tensor_list):
        raise ValueError(
            f"all tensors in tensor_list must have the same number of channels, got {[t.shape[0] for t in tensor_list]}"
        )
    h = max(t.shape[1] for t in tensor_list)
    w = max(t.shape[2] for t in tensor_list)
    if size_divisibility > 0:
        h = -(-h // size_divisibility) * size_divisibility
        w = -(-w // size_divisibility) * size_divisibility
    first = tensor_list[0]
    tensors = first.new_zeros((len(tensor_list), c, h, w))
    mask = torch.ones((len(tensor_list), h, w), dtype=torch.bool, device=first.device)
    for img, pad, m in zip(tensor_list, tensors, mask):
        pad[:, : img.shape[1], : img.shape[2]].copy_(img)
        m[: img.shape[1], : img.shape[2]] = False
    return NestedTensor(tensors, mask)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """log(x / (1 - x)), with x clamped away from 0 and 1 by eps (as the official code)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


@torch.no_grad()
def accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1,)):
    """Top-k accuracy in percent of logits (N, C) against labels (N)."""
    if target.numel() == 0:
        return [torch.zeros([], device=output.device)]
    maxk = max(topk)
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.view(1, -1).expand_as(pred.t()))
    return [correct[:k].reshape(-1).float().sum(0) * (100.0 / target.size(0)) for k in topk]
