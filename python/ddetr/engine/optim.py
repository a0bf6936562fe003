"""The official optimiser: AdamW over three parameter groups, and a step lr drop.

- the backbone (names containing `backbone.0`) at lr_backbone;
- the sampling offsets and reference points at lr x 0.1: they move sampling locations,
  and large steps there scatter the attention before the rest has learnt anything;
- everything else at lr.
"""

from __future__ import annotations

import torch

from .options import DEFAULTS

BACKBONE_NAMES = ("backbone.0",)
LINEAR_PROJ_NAMES = ("reference_points", "sampling_offsets")


def _match(name: str, keys) -> bool:
    return any(k in name for k in keys)


def param_groups(
    model: torch.nn.Module, lr: float, lr_backbone: float, lr_linear_proj_mult: float = DEFAULTS["lr_linear_proj_mult"]
) -> list:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {
            "params": [p for n, p in named if not _match(n, BACKBONE_NAMES) and not _match(n, LINEAR_PROJ_NAMES)],
            "lr": lr,
        },
        {"params": [p for n, p in named if _match(n, BACKBONE_NAMES)], "lr": lr_backbone},
        {
            "params": [p for n, p in named if _match(n, LINEAR_PROJ_NAMES) and not _match(n, BACKBONE_NAMES)],
            "lr": lr * lr_linear_proj_mult,
        },
    ]
    return groups


def build_optimizer(
    model,
    lr: float = DEFAULTS["lr"],
    lr_backbone: float = DEFAULTS["lr_backbone"],
    weight_decay: float = DEFAULTS["weight_decay"],
    lr_linear_proj_mult: float = DEFAULTS["lr_linear_proj_mult"],
):
    return torch.optim.AdamW(
        param_groups(model, lr, lr_backbone, lr_linear_proj_mult), lr=lr, weight_decay=weight_decay
    )


def build_scheduler(optimizer, lr_drop: int = DEFAULTS["lr_drop"], gamma: float = 0.1):
    """lr x gamma every `lr_drop` epochs (stepped once per epoch)."""
    return torch.optim.lr_scheduler.StepLR(optimizer, max(1, lr_drop), gamma=gamma)
