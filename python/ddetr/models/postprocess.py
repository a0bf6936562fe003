"""Model outputs -> detections in image coordinates (the format COCO evaluation takes)."""

from __future__ import annotations

import torch
from torch import nn

from ..util.box_ops import box_cxcywh_to_xyxy
from .config import DEFAULTS


def top_detections(logits: torch.Tensor, boxes: torch.Tensor, target_sizes: torch.Tensor, num_select: int):
    """Batched: the `num_select` best (query, class) pairs of each image as scores (B, K),
    labels (B, K) int64 and boxes (B, K, 4) absolute (x0, y0, x1, y1); K = min(num_select,
    Q * C). Also what the exported graph computes (ddetr.export, postprocess=True)."""
    b, q, c = logits.shape
    prob = logits.sigmoid().reshape(b, -1)
    scores, index = prob.topk(min(num_select, q * c), dim=1)
    query, labels = index // c, index % c
    boxes = torch.gather(box_cxcywh_to_xyxy(boxes), 1, query[..., None].expand(-1, -1, 4))
    h, w = target_sizes.to(boxes.dtype).unbind(1)
    boxes = boxes * torch.stack([w, h, w, h], 1)[:, None, :]
    return scores, labels, boxes


class PostProcess(nn.Module):
    """Keep the `num_select` highest sigmoid scores over all (query, class) pairs, so one
    query may give several detections with different labels, as the official code does."""

    def __init__(self, num_select: int = DEFAULTS["num_select"]):
        super().__init__()
        self.num_select = num_select

    @torch.no_grad()
    def forward(self, outputs, target_sizes: torch.Tensor):
        """target_sizes: (B, 2) as (height, width) of each original image. Returns per image
        {'scores': (K,), 'labels': (K,) int64, 'boxes': (K, 4) absolute (x0, y0, x1, y1)}."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        target_sizes = torch.as_tensor(target_sizes, device=logits.device)
        if target_sizes.dim() != 2 or target_sizes.shape != (len(logits), 2):
            raise ValueError(
                f"target_sizes must be ({len(logits)}, 2) (height, width) per image, got {tuple(target_sizes.shape)}"
            )
        scores, labels, boxes = top_detections(logits, boxes, target_sizes, self.num_select)
        return [{"scores": s, "labels": lb, "boxes": bx} for s, lb, bx in zip(scores, labels, boxes)]
