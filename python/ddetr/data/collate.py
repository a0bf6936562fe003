"""Batching images of different sizes: padded to the largest, with a mask that is True on
padding (the model's attention ignores those pixels)."""

from __future__ import annotations

import torch

from ..util.misc import NestedTensor, nested_tensor_from_tensor_list


def collate_fn(batch) -> tuple:
    """[(image, target), ...] -> (NestedTensor batch, tuple of targets)."""
    images, targets = zip(*batch)
    return nested_tensor_from_tensor_list(list(images)), tuple(targets)


def move_targets(targets, device) -> list:
    return [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]


__all__ = ["NestedTensor", "collate_fn", "move_targets"]
