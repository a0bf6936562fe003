"""Every multi-scale deformable attention in an HF transformers model on ddetr's op.

    import ddetr.integrations.transformers as ddetr_hf

    model = ddetr_hf.kernelize(model)   # any transformers 5.x, with or without `kernels`

or, with the `kernels` package (transformers 5.22 + kernels 0.17, 5.23+ + kernels 0.18):

    ddetr_hf.register()
    model = AutoModelForObjectDetection.from_pretrained(path, use_kernels=True)

`kernelize` covers the `MultiScaleDeformableAttention` layers (deformable_detr,
grounding_dino, mm_grounding_dino, rt_detr, omdet_turbo, lw_detr, rf_detr, pp_doclayout_*),
mask2former's and oneformer's pixel decoders, and rt_detr_v2's, d_fine's and deimv2's
decoders; `register` covers the first group (the only one behind transformers' hook).
transformers itself is imported by neither `import ddetr` nor this module.
"""

from __future__ import annotations

import logging

import torch

from .hub import REPOSITORY, register
from .takeover import Report, take_over

__all__ = ["kernelize", "register", "take_over", "Report", "REPOSITORY"]

logger = logging.getLogger(__name__)


def kernelize(model: torch.nn.Module, *, verbose: bool = True) -> torch.nn.Module:
    """Runs every multi-scale deformable attention inside `model` (an HF transformers model)
    on `torch.ops.ddetr.ms_deform_attn`, on the model's device, in inference and training,
    under autocast and torch.compile. Changes only this model's layers. Logs (and, with
    `verbose`, prints) one line: the layers taken over per family, and those left and why.
    Returns `model`."""
    line = take_over(model).line()
    logger.info(line)
    if verbose:
        print(line)
    return model
