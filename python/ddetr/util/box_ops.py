"""Box conversions and IoU. Boxes are (..., 4) tensors, either (cx, cy, w, h) or
(x0, y0, x1, y1); the IoU functions take (x0, y0, x1, y1)."""

from __future__ import annotations

import torch


def box_cxcywh_to_xyxy(x: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = x.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)


def box_xyxy_to_cxcywh(x: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = x.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor):
    """Pairwise IoU (N, M) and union (N, M) of xyxy boxes (N, 4) and (M, 4)."""
    area1, area2 = box_area(boxes1), box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area1[:, None] + area2 - inter
    return inter / union, union


def _check_boxes(boxes: torch.Tensor, name: str):
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {tuple(boxes.shape)}")
    # A box with x1 < x0 has negative area and would give a meaningless (even > 1) GIoU;
    # this also catches NaN boxes, which fail every comparison.
    if not bool((boxes[:, 2:] >= boxes[:, :2]).all()):
        bad = (~(boxes[:, 2:] >= boxes[:, :2]).all(-1)).nonzero()[:, 0].tolist()
        raise ValueError(
            f"degenerate boxes in {name}: x1 < x0 or y1 < y0 (or NaN) at rows "
            f"{bad[:10]}{' ...' if len(bad) > 10 else ''}; boxes must be "
            "(x0, y0, x1, y1) with x1 >= x0 and y1 >= y0"
        )


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU (https://giou.stanford.edu/) of xyxy boxes: (N, M) in [-1, 1].

    Raises ValueError on degenerate boxes (x1 < x0 or y1 < y0).
    """
    # Compiled (the criterion's compiled box losses), the checks are left out: their
    # data-dependent branch would break the graph, and the matcher, which runs eagerly,
    # has checked the same predictions and targets.
    if not torch.compiler.is_compiling():
        _check_boxes(boxes1, "boxes1")
        _check_boxes(boxes2, "boxes2")
    iou, union = box_iou(boxes1, boxes2)
    lt = torch.min(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[:, 2:])
    area = (rb - lt).clamp(min=0).prod(-1)  # smallest enclosing box
    return iou - (area - union) / area
