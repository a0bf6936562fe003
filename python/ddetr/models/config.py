"""The model's configuration, in one place: the official options and their defaults, the
options that decide a model's weights, the ResNet table, every choice list, and what each
option accepts. Plain data: everything else in ddetr reads these facts from here."""

from __future__ import annotations

import math

from ..errors import UserError, option_error

DEFAULTS = dict(
    # model
    num_classes=91,
    backbone="resnet50",
    backbone_weights=None,
    lr_backbone=2e-5,
    dilation=False,
    position_embedding="sine",
    position_embedding_scale=2 * math.pi,
    num_feature_levels=4,
    enc_layers=6,
    dec_layers=6,
    dim_feedforward=1024,
    hidden_dim=256,
    dropout=0.1,
    nheads=8,
    num_queries=300,
    dec_n_points=4,
    enc_n_points=4,
    with_box_refine=False,
    two_stage=False,
    aux_loss=True,
    # matcher and loss
    set_cost_class=2.0,
    set_cost_bbox=5.0,
    set_cost_giou=2.0,
    cls_loss_coef=2.0,
    bbox_loss_coef=5.0,
    giou_loss_coef=2.0,
    focal_alpha=0.25,
    # post-processing
    num_select=100,
)

# The model options that decide a state dict's keys and shapes, or what its weights compute:
# a model fine-tuned from weights takes these from them (all but the class count).
ARCHITECTURE = (
    "num_classes",
    "backbone",
    "dilation",
    "position_embedding",
    "position_embedding_scale",
    "num_feature_levels",
    "enc_layers",
    "dec_layers",
    "dim_feedforward",
    "hidden_dim",
    "nheads",
    "num_queries",
    "dec_n_points",
    "enc_n_points",
    "with_box_refine",
    "two_stage",
)

# name -> (block, blocks per stage). "basic": two 3x3 convolutions (output channels x1);
# "bottleneck": 1x1, 3x3, 1x1 (output channels x4). transformers' ResNet config names the
# blocks the same way (`layer_type`).
RESNETS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}  # a block's output channels / its width

# The choice lists.
BACKBONES = tuple(RESNETS)
POSITION_EMBEDDINGS = ("sine", "learned", "v2", "v3")
DTYPES = ("float32", "bfloat16", "float16")  # what inference may compute in (torch dtype names)
HF_BACKBONE_ROUTES = ("transformers", "timm")  # the ResNet names of an HF layout: transformers' own, or timm's


def flag(name: str) -> str:
    """An option's command-line spelling: num_feature_levels -> --num-feature-levels."""
    return "--" + name.replace("_", "-")


# What each option accepts: (test, what was expected).
def int_range(lo: int, hi: int | None = None, multiple: int = 1):
    text = f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
    text += f", a multiple of {multiple}" if multiple > 1 else ""
    return (
        lambda v: (
            isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi) and v % multiple == 0
        ),
        text,
    )


def number(lo: float, hi: float | None = None, above: bool = False):
    text = f"a finite number {'>' if above else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
    return (
        lambda v: (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and (v > lo if above else v >= lo)
            and (hi is None or v <= hi)
        ),
        text,
    )


def one_of(*values):
    return (lambda v: v in values, "one of " + ", ".join(map(str, values)))


CHECKS = dict(
    num_classes=int_range(1, 100_000),
    backbone=one_of(*BACKBONES),
    lr_backbone=number(0),
    position_embedding=one_of(*POSITION_EMBEDDINGS),
    position_embedding_scale=number(0, above=True),
    num_feature_levels=int_range(1, 4),
    enc_layers=int_range(1, 64),
    dec_layers=int_range(1, 64),
    dim_feedforward=int_range(1),
    hidden_dim=int_range(32, 8192, multiple=32),  # GroupNorm(32)
    dropout=number(0, 0.99),
    nheads=int_range(1),
    num_queries=int_range(1, 100_000),
    dec_n_points=int_range(1, 64),
    enc_n_points=int_range(1, 64),
    set_cost_class=number(0),
    set_cost_bbox=number(0),
    set_cost_giou=number(0),
    cls_loss_coef=number(0),
    bbox_loss_coef=number(0),
    giou_loss_coef=number(0),
    focal_alpha=number(0, 1),
    num_select=int_range(1),
)


def check_options(values: dict, source: str | None = None, checks: dict | None = None) -> None:
    """UserError naming the first option of `values` (option name -> value; None: not set)
    that is out of range. `source`: where the values come from (a checkpoint), for the message.
    `checks`: the table to check against (default: the model's, CHECKS)."""
    for name, (ok, expected) in (CHECKS if checks is None else checks).items():
        v = values.get(name)
        if v is not None and not ok(v):
            err = option_error(flag(name), v, expected)
            raise UserError(f"{source}: saved option {err}") if source else err
    hidden, heads = values.get("hidden_dim"), values.get("nheads")
    if hidden and heads and hidden % heads:
        err = f"--nheads {heads}: expected a divisor of --hidden-dim {hidden}"
        raise UserError(f"{source}: saved option {err}" if source else err)
