"""Deformable DETR: backbone -> input projections -> deformable transformer -> class and box
heads at every decoder layer. Module names follow the official code, so its checkpoints
(`checkpoint['model']`) load with strict=True."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..util.misc import NestedTensor, nested_tensor_from_tensor_list
from .backbone import Joiner
from .deformable_transformer import DeformableTransformer, refine_boxes

PRIOR_PROB = 0.01  # the foreground probability that fresh class heads predict (focal loss)


def init_class_bias(class_head: nn.Linear) -> None:
    """Class logits start at the prior: sigmoid(bias) = PRIOR_PROB, so the focal loss is not
    swamped by the many background queries in the first iterations."""
    with torch.no_grad():
        class_head.bias.fill_(-math.log((1 - PRIOR_PROB) / PRIOR_PROB))


class MLP(nn.Module):
    """Linear layers with ReLU between them (the box head)."""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def check_samples(samples) -> NestedTensor:
    """Accept a NestedTensor, a list of (3, H, W) float images, or a (B, 3, H, W) batch."""
    if isinstance(samples, NestedTensor):
        t, m = samples.tensors, samples.mask
        if t.dim() != 4 or t.shape[1] != 3 or not t.is_floating_point():
            raise ValueError(
                f"samples.tensors must be a (B, 3, H, W) floating-point tensor, got {tuple(t.shape)} {t.dtype}"
            )
        if m is None:
            m = torch.zeros((t.shape[0],) + t.shape[2:], dtype=torch.bool, device=t.device)
        elif m.shape != (t.shape[0],) + t.shape[2:] or m.dtype != torch.bool:
            raise ValueError(
                f"samples.mask must be a bool (B, H, W) = {(t.shape[0],) + tuple(t.shape[2:])} "
                f"tensor, got {tuple(m.shape)} {m.dtype}"
            )
        return NestedTensor(t, m)
    if isinstance(samples, torch.Tensor) and samples.dim() == 3:
        samples = [samples]
    if not isinstance(samples, (list, tuple, torch.Tensor)) or len(samples) == 0:
        raise ValueError(
            "samples must be a NestedTensor or a non-empty list of (3, H, W) float "
            f"tensors, got {type(samples).__name__}"
        )
    for i, img in enumerate(samples):
        if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] != 3 or not img.is_floating_point():
            got = f"{tuple(img.shape)} {img.dtype}" if isinstance(img, torch.Tensor) else type(img).__name__
            raise ValueError(f"samples[{i}] must be a (3, H, W) floating-point image tensor, got {got}")
    return nested_tensor_from_tensor_list(list(samples))


class DeformableDETR(nn.Module):
    def __init__(
        self,
        backbone: Joiner,
        transformer: DeformableTransformer,
        num_classes: int,
        num_queries: int,
        num_feature_levels: int,
        aux_loss: bool = True,
        with_box_refine: bool = False,
        two_stage: bool = False,
    ):
        super().__init__()
        if two_stage and not with_box_refine:
            raise ValueError(
                "two_stage=True needs with_box_refine=True (as the official '++ two-stage' "
                "variant): the encoder proposals use the extra refinement head"
            )
        self.num_queries, self.num_classes = num_queries, num_classes
        self.num_feature_levels = num_feature_levels
        self.aux_loss, self.with_box_refine, self.two_stage = aux_loss, with_box_refine, two_stage
        self.transformer = transformer
        hidden_dim = transformer.d_model
        class_embed = nn.Linear(hidden_dim, num_classes)
        bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        if not two_stage:
            self.query_embed = nn.Embedding(num_queries, hidden_dim * 2)

        # C3..C5 by a 1x1 conv each; further levels by 3x3 stride-2 convs, first on C5.
        projs = [
            nn.Sequential(nn.Conv2d(c, hidden_dim, 1), nn.GroupNorm(32, hidden_dim))
            for c in backbone.num_channels[:num_feature_levels]
        ]
        in_channels = backbone.num_channels[-1]
        for _ in range(num_feature_levels - len(projs)):
            projs.append(
                nn.Sequential(nn.Conv2d(in_channels, hidden_dim, 3, stride=2, padding=1), nn.GroupNorm(32, hidden_dim))
            )
            in_channels = hidden_dim
        self.input_proj = nn.ModuleList(projs)
        self.backbone = backbone

        # Heads start predicting a 1% foreground prior and the reference box itself.
        init_class_bias(class_embed)
        nn.init.constant_(bbox_embed.layers[-1].weight, 0.0)
        nn.init.constant_(bbox_embed.layers[-1].bias, 0.0)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)

        # One head per decoder layer (+1 for the two-stage encoder proposals). Without
        # refinement they are one shared module, saved once per index in checkpoints.
        num_pred = transformer.decoder.num_layers + (1 if two_stage else 0)
        if with_box_refine:
            self.class_embed = nn.ModuleList(copy.deepcopy(class_embed) for _ in range(num_pred))
            self.bbox_embed = nn.ModuleList(copy.deepcopy(bbox_embed) for _ in range(num_pred))
            nn.init.constant_(self.bbox_embed[0].layers[-1].bias[2:], -2.0)
            transformer.decoder.bbox_embed = self.bbox_embed
        else:
            nn.init.constant_(bbox_embed.layers[-1].bias[2:], -2.0)
            self.class_embed = nn.ModuleList([class_embed] * num_pred)
            self.bbox_embed = nn.ModuleList([bbox_embed] * num_pred)
            transformer.decoder.bbox_embed = None
        if two_stage:
            transformer.decoder.class_embed = self.class_embed
            for box_embed in self.bbox_embed:
                nn.init.constant_(box_embed.layers[-1].bias[2:], 0.0)

    def forward(self, samples: NestedTensor | Sequence[torch.Tensor]):
        """samples: a NestedTensor (B, 3, H, W) + mask, or a list of (3, H, W) float images.

        Returns a dict: 'pred_logits' (B, Q, num_classes), 'pred_boxes' (B, Q, 4) normalised
        (cx, cy, w, h); with aux_loss, 'aux_outputs' (those of the earlier decoder layers);
        with two_stage, 'enc_outputs' (the encoder's class-agnostic proposals).
        """
        samples = check_samples(samples)
        features, pos = self.backbone(samples)
        srcs = [self.input_proj[lvl](f.tensors) for lvl, f in enumerate(features)]
        masks = [f.mask for f in features]
        for lvl in range(len(srcs), self.num_feature_levels):
            src = self.input_proj[lvl](features[-1].tensors if lvl == len(features) else srcs[-1])
            mask = F.interpolate(samples.mask[None].float(), size=src.shape[-2:]).to(torch.bool)[0]
            srcs.append(src)
            masks.append(mask)
            pos.append(self.backbone[1](NestedTensor(src, mask)).to(src.dtype))

        query_embed = None if self.two_stage else self.query_embed.weight
        hs, init_reference, _, refined, enc_class, enc_coord_unact = self.transformer(srcs, masks, pos, query_embed)

        outputs_class = [self.class_embed[lvl](hs[lvl]) for lvl in range(hs.shape[0])]
        if refined is not None:  # box refinement: the decoder's heads already gave each layer's boxes
            outputs_coord = list(refined)
        else:  # every layer's boxes are relative to the same initial references
            outputs_coord = [refine_boxes(init_reference, self.bbox_embed[lvl](hs[lvl])) for lvl in range(hs.shape[0])]

        out = {"pred_logits": outputs_class[-1], "pred_boxes": outputs_coord[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": a, "pred_boxes": b} for a, b in zip(outputs_class[:-1], outputs_coord[:-1])
            ]
        if self.two_stage:
            out["enc_outputs"] = {"pred_logits": enc_class, "pred_boxes": enc_coord_unact.sigmoid()}
        return out
