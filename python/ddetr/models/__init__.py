"""Deformable DETR: model, matcher, losses and post-processing.

    model, criterion, postprocessors = ddetr.models.build(**options)
    outputs = model(images)                  # list of (3, H, W) float tensors or a NestedTensor
    losses = criterion(outputs, targets)     # targets: [{'labels': int64 (n,), 'boxes': (n, 4) cxcywh in [0, 1]}]
    loss = criterion.weighted_total(losses)
    results = postprocessors['bbox'](outputs, target_sizes)   # (B, 2) original (h, w)

Options are the official command-line flags (see DEFAULTS); unknown names raise TypeError,
so pass only the model's: `{k: v for k, v in vars(args).items() if k in DEFAULTS}`.
Variants: default; `num_feature_levels=1` (single scale); `with_box_refine=True`;
`with_box_refine=True, two_stage=True`. Official checkpoints load with
`model.load_state_dict(torch.load(path)['model'], strict=True)`.
"""

from __future__ import annotations

from .backbone import Backbone, FrozenBatchNorm2d, Joiner, ResNet, build_backbone, load_torchvision_weights
from .config import ARCHITECTURE, DEFAULTS
from .criterion import SetCriterion, build_weight_dict, sigmoid_focal_loss
from .deformable_detr import MLP, DeformableDETR
from .deformable_transformer import DeformableTransformer
from .matcher import HungarianMatcher, build_matcher
from .position_encoding import PositionEmbeddingLearned, PositionEmbeddingSine, build_position_encoding
from .postprocess import PostProcess


def _options(options: dict) -> dict:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; valid options: {sorted(DEFAULTS)}")
    opts = dict(DEFAULTS, **options)
    if opts["num_feature_levels"] < 1:
        raise ValueError(f"num_feature_levels must be >= 1, got {opts['num_feature_levels']}")
    if opts["hidden_dim"] % 32 != 0:
        raise ValueError(f"hidden_dim must be a multiple of 32 (GroupNorm(32)), got {opts['hidden_dim']}")
    return opts


def build_model(**options) -> DeformableDETR:
    """The Deformable DETR model with the official defaults; see DEFAULTS for the options."""
    o = _options(options)
    backbone = build_backbone(
        o["backbone"],
        o["lr_backbone"],
        o["num_feature_levels"],
        o["dilation"],
        o["backbone_weights"],
        o["position_embedding"],
        o["hidden_dim"],
        o["position_embedding_scale"],
    )
    transformer = DeformableTransformer(
        d_model=o["hidden_dim"],
        nhead=o["nheads"],
        num_encoder_layers=o["enc_layers"],
        num_decoder_layers=o["dec_layers"],
        dim_feedforward=o["dim_feedforward"],
        dropout=o["dropout"],
        num_feature_levels=o["num_feature_levels"],
        dec_n_points=o["dec_n_points"],
        enc_n_points=o["enc_n_points"],
        two_stage=o["two_stage"],
        two_stage_num_proposals=o["num_queries"],
    )
    return DeformableDETR(
        backbone,
        transformer,
        o["num_classes"],
        o["num_queries"],
        o["num_feature_levels"],
        o["aux_loss"],
        o["with_box_refine"],
        o["two_stage"],
    )


def build_criterion(**options) -> SetCriterion:
    """SetCriterion (focal + L1 + GIoU, Hungarian matching) with `weight_dict` set."""
    o = _options(options)
    matcher = build_matcher(o["set_cost_class"], o["set_cost_bbox"], o["set_cost_giou"])
    weight_dict = build_weight_dict(
        o["cls_loss_coef"], o["bbox_loss_coef"], o["giou_loss_coef"], o["dec_layers"], o["aux_loss"], o["two_stage"]
    )
    return SetCriterion(o["num_classes"], matcher, weight_dict, focal_alpha=o["focal_alpha"])


def build_postprocessors(**options) -> dict:
    """{'bbox': PostProcess}: call as postprocessors['bbox'](outputs, target_sizes)."""
    return {"bbox": PostProcess(_options(options)["num_select"])}


def build(**options):
    """(model, criterion, postprocessors), as the official `build_model(args)`. A model from
    weights (either layout): `ddetr.weights.build(weights, **options)`."""
    return build_model(**options), build_criterion(**options), build_postprocessors(**options)


__all__ = [
    "DEFAULTS",
    "ARCHITECTURE",
    "build",
    "build_model",
    "build_criterion",
    "build_postprocessors",
    "DeformableDETR",
    "DeformableTransformer",
    "MLP",
    "Backbone",
    "Joiner",
    "ResNet",
    "FrozenBatchNorm2d",
    "build_backbone",
    "load_torchvision_weights",
    "PositionEmbeddingSine",
    "PositionEmbeddingLearned",
    "build_position_encoding",
    "HungarianMatcher",
    "build_matcher",
    "SetCriterion",
    "sigmoid_focal_loss",
    "build_weight_dict",
    "PostProcess",
]
