"""The training losses: sigmoid focal loss on classes, L1 and GIoU on matched boxes, for
the final outputs, every auxiliary decoder output and (two-stage) the encoder proposals."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from ..util.misc import accuracy, get_world_size, is_dist_avail_and_initialized
from .config import DEFAULTS


def sigmoid_focal_loss(inputs, targets, num_boxes, alpha: float = 0.25, gamma: float = 2):
    """Focal loss (RetinaNet) on logits (B, Q, C) against 0/1 targets of the same shape:
    mean over queries (dim 1), summed over images and classes, divided by num_boxes (the
    criterion multiplies by Q, so in effect the sum over everything / num_boxes)."""
    prob = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_boxes


def label_loss(logits, batch_idx, src_idx, classes, num_boxes, alpha: float):
    """The classification loss of one output: focal loss of the logits (B, Q, C) against
    one-hot targets, matched queries (batch_idx, src_idx) of their classes, every other
    query "no object" (all zeros). Times Q: the sum over queries, not the mean."""
    onehot = torch.zeros_like(logits)
    onehot[batch_idx, src_idx, classes] = 1
    return sigmoid_focal_loss(logits, onehot, num_boxes, alpha, 2) * logits.shape[1]


def box_losses(pred_boxes, batch_idx, src_idx, tgt_boxes, num_boxes):
    """L1 and GIoU losses (each summed / num_boxes) between the matched predictions
    pred_boxes[batch_idx, src_idx] and their targets (M, 4), both normalised cxcywh."""
    src = pred_boxes[batch_idx, src_idx]
    loss_bbox = F.l1_loss(src, tgt_boxes, reduction="none").sum() / num_boxes
    giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt_boxes)))
    return loss_bbox, (1 - giou).sum() / num_boxes


def _check_targets(targets, num_classes):
    for i, t in enumerate(targets):
        if "labels" not in t or "boxes" not in t:
            raise ValueError(f"targets[{i}] must have 'labels' and 'boxes', got keys {sorted(t)}")
        labels, boxes = t["labels"], t["boxes"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:1]:
            raise ValueError(
                f"targets[{i}]: 'boxes' must be (n, 4) and 'labels' (n,), got "
                f"{tuple(boxes.shape)} and {tuple(labels.shape)}"
            )
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"targets[{i}]['labels'] must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
            )
        if boxes.numel() and not (torch.isfinite(boxes).all() and (boxes[:, 2:] >= 0).all()):
            raise ValueError(f"targets[{i}]['boxes'] must be finite normalised (cx, cy, w, h) with w, h >= 0")


class SetCriterion(nn.Module):
    """Match with `matcher`, then compute `losses` ('labels', 'boxes', 'cardinality') on
    every output. Returns a dict of unweighted losses; `weighted_total` turns it into the
    training loss."""

    def __init__(
        self, num_classes, matcher, weight_dict, losses=("labels", "boxes", "cardinality"), focal_alpha: float = 0.25
    ):
        super().__init__()
        self.num_classes, self.matcher, self.weight_dict = num_classes, matcher, weight_dict
        self.losses, self.focal_alpha = list(losses), focal_alpha
        self._label_loss, self._box_losses = label_loss, box_losses  # compile_losses swaps these

    def compile_losses(self, **options) -> None:
        """torch.compile (`options`, e.g. dynamic=True) the loss math: `label_loss` and
        `box_losses`, called once per decoder layer with the same shapes, so one compiled
        graph each serves every layer. The matcher (scipy's assignment, which cannot be
        traced), the target checks and the indexing by the matching stay eager."""
        self._label_loss = torch.compile(label_loss, **options)
        self._box_losses = torch.compile(box_losses, **options)

    @staticmethod
    def _src_permutation_idx(indices):
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        return batch, torch.cat([src for src, _ in indices])

    def loss_labels(self, outputs, targets, indices, num_boxes, log=True):
        logits = outputs["pred_logits"]
        idx = self._src_permutation_idx(indices)
        classes_o = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(logits.device)
        losses = {"loss_ce": self._label_loss(logits, *idx, classes_o, num_boxes, self.focal_alpha)}
        if log:  # a diagnostic, not trained on
            losses["class_error"] = 100 - accuracy(logits[idx], classes_o)[0]
        return losses

    @torch.no_grad()
    def loss_cardinality(self, outputs, targets, indices, num_boxes):
        """Error in the number of non-"no object" predictions (a diagnostic, no gradient);
        as in the official code, argmax over classes other than the last."""
        logits = outputs["pred_logits"]
        tgt_lengths = torch.as_tensor([len(t["labels"]) for t in targets], device=logits.device)
        card_pred = (logits.argmax(-1) != logits.shape[-1] - 1).sum(1)
        return {"cardinality_error": F.l1_loss(card_pred.float(), tgt_lengths.float())}

    def loss_boxes(self, outputs, targets, indices, num_boxes):
        idx = self._src_permutation_idx(indices)
        boxes = outputs["pred_boxes"]
        tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(boxes)
        loss_bbox, loss_giou = self._box_losses(boxes, *idx, tgt, num_boxes)
        return {"loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def get_loss(self, loss, outputs, targets, indices, num_boxes, **kwargs):
        fns = {"labels": self.loss_labels, "cardinality": self.loss_cardinality, "boxes": self.loss_boxes}
        if loss not in fns:
            raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(fns)}")
        return fns[loss](outputs, targets, indices, num_boxes, **kwargs)

    def _all_losses(self, outputs, targets, num_boxes, suffix=""):
        indices = self.matcher(outputs, targets)
        losses = {}
        for loss in self.losses:
            kwargs = {"log": False} if (loss == "labels" and suffix) else {}
            losses.update(
                {k + suffix: v for k, v in self.get_loss(loss, outputs, targets, indices, num_boxes, **kwargs).items()}
            )
        return losses

    def forward(self, outputs, targets):
        """outputs: the model's dict; targets: per image {'labels': (n,) int64, 'boxes': (n, 4)
        normalised cxcywh}. Images with no boxes are fine (all their queries are negatives)."""
        _check_targets(targets, self.num_classes)
        device = outputs["pred_logits"].device
        # Normalise by the average number of boxes per process, at least 1.
        num_boxes = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if is_dist_avail_and_initialized():
            torch.distributed.all_reduce(num_boxes)
        num_boxes = torch.clamp(num_boxes / get_world_size(), min=1).item()

        main = {k: v for k, v in outputs.items() if k not in ("aux_outputs", "enc_outputs")}
        losses = self._all_losses(main, targets, num_boxes)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update(self._all_losses(aux, targets, num_boxes, f"_{i}"))
        if "enc_outputs" in outputs:
            # encoder proposals are class-agnostic: every target is class 0
            bin_targets = [dict(t, labels=torch.zeros_like(t["labels"])) for t in targets]
            losses.update(self._all_losses(outputs["enc_outputs"], bin_targets, num_boxes, "_enc"))
        return losses

    def weighted_total(self, losses: dict) -> torch.Tensor:
        """The training loss: the sum of each loss times its `weight_dict` entry. Losses
        without a weight (class_error, cardinality_error) are diagnostics and left out."""
        return sum(losses[k] * self.weight_dict[k] for k in losses if k in self.weight_dict)


def build_weight_dict(
    cls_loss_coef=DEFAULTS["cls_loss_coef"],
    bbox_loss_coef=DEFAULTS["bbox_loss_coef"],
    giou_loss_coef=DEFAULTS["giou_loss_coef"],
    dec_layers=DEFAULTS["dec_layers"],
    aux_loss=DEFAULTS["aux_loss"],
):
    base = {"loss_ce": cls_loss_coef, "loss_bbox": bbox_loss_coef, "loss_giou": giou_loss_coef}
    weight_dict = dict(base)
    # As the official code: the `_enc` weights come with aux_loss, whatever the variant, so
    # two-stage without aux_loss leaves the encoder's proposals unweighted.
    if aux_loss:
        for i in range(dec_layers - 1):
            weight_dict.update({k + f"_{i}": v for k, v in base.items()})
        weight_dict.update({k + "_enc": v for k, v in base.items()})
    return weight_dict
