"""Hungarian matching between predictions and targets, with the focal-loss-style class cost
of Deformable DETR plus L1 and GIoU box costs."""

from __future__ import annotations

import torch
from torch import nn

from ..util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou


class HungarianMatcher(nn.Module):
    """One-to-one assignment per image minimising
    cost_class * focal_cost + cost_bbox * L1 + cost_giou * (-GIoU).

    Returns, per image, (prediction indices, target indices) as int64 tensors of length
    min(num_queries, num_targets), prediction indices sorted.
    """

    def __init__(
        self, cost_class: float = 2, cost_bbox: float = 5, cost_giou: float = 2, alpha: float = 0.25, gamma: float = 2.0
    ):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matcher costs are 0")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.alpha, self.gamma = alpha, gamma

    @torch.no_grad()
    def forward(self, outputs, targets):
        bs, num_queries = outputs["pred_logits"].shape[:2]
        prob = outputs["pred_logits"].flatten(0, 1).float().sigmoid()
        out_bbox = outputs["pred_boxes"].flatten(0, 1).float()
        tgt_ids = torch.cat([t["labels"] for t in targets]).long()
        tgt_bbox = torch.cat([t["boxes"] for t in targets]).to(out_bbox)

        # focal loss of "is tgt_id" minus focal loss of "is not tgt_id"
        a, g = self.alpha, self.gamma
        neg = (1 - a) * prob**g * -(1 - prob + 1e-8).log()
        pos = a * (1 - prob) ** g * -(prob + 1e-8).log()
        cost_class = pos[:, tgt_ids] - neg[:, tgt_ids]
        cost_bbox = torch.cdist(out_bbox, tgt_bbox, p=1)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(out_bbox), box_cxcywh_to_xyxy(tgt_bbox))
        cost = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        cost = cost.view(bs, num_queries, -1).cpu()

        sizes = [len(t["boxes"]) for t in targets]
        from scipy.optimize import linear_sum_assignment  # here: scipy.optimize costs every CLI start 1 s

        indices = [linear_sum_assignment(c[i]) for i, c in enumerate(cost.split(sizes, -1))]
        return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices]


def build_matcher(set_cost_class: float = 2, set_cost_bbox: float = 5, set_cost_giou: float = 2) -> HungarianMatcher:
    # The official matcher keeps alpha at 0.25 whatever focal_alpha the loss uses.
    return HungarianMatcher(set_cost_class, set_cost_bbox, set_cost_giou)
