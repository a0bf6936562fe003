"""MSDeformAttn: the multi-scale deformable attention module of Deformable DETR, with the
2020 parameter names (sampling_offsets, attention_weights, value_proj, output_proj) and the
paper's initialisation, so official checkpoints load into it."""

from __future__ import annotations

import math

import torch
from torch import nn

from .ops import (
    METHODS,
    location_dtype,
    ms_deform_attn,
    ms_deform_attn_pytorch,
    ms_deform_attn_v2,
    ms_deform_attn_v2_pytorch,
)


class MSDeformAttn(nn.Module):
    """Each query attends to `n_points` sampled locations per head and level around its
    reference point; offsets and weights are predicted from the query.

    The generalised form of RT-DETRv2, D-FINE and DEIM: `n_points` a list of counts, one per
    level (e.g. D-FINE's [3, 6, 3]), and/or `method="discrete"` (the nearest pixel, border
    clamped, no location gradient); it runs `ddetr.ms_deform_attn_v2`, with the weights
    softmaxed over all of a head's points.

    Set `use_reference = True` (on an instance or the class) to run the pure-PyTorch
    reference instead of the compiled op, for comparison in tests.
    """

    use_reference = False

    def __init__(
        self,
        d_model: int = 256,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int | list[int] = 4,
        im2col_step: int = 64,
        method: str = "default",
    ):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        ragged = not isinstance(n_points, int)
        self.points_list = [int(p) for p in n_points] if ragged else [n_points] * n_levels
        if len(self.points_list) != n_levels or min(self.points_list) <= 0:
            raise ValueError(f"n_points must be a positive count or {n_levels} of them (one per level), got {n_points}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.im2col_step, self.method = im2col_step, method
        self.generalised = ragged or method != "default"  # ms_deform_attn_v2's layout
        k = sum(self.points_list)
        self.sampling_offsets = nn.Linear(d_model, n_heads * k * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * k)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self):
        # Offsets start as a ring of 8 directions per head, point i at distance i + 1.
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        # point i of each level at distance i + 1, level-major
        scale = torch.cat([torch.arange(1, p + 1, dtype=torch.float32) for p in self.points_list])
        grid = grid.view(self.n_heads, 1, 2) * scale.view(1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    _reset_parameters = reset_parameters  # the 2020 name, which the official transformer calls

    def sampling(self, query: torch.Tensor, reference_points: torch.Tensor, spatial_shapes: torch.Tensor):
        """Sampling locations (N, Lq, M, L, P, 2) and softmaxed weights (N, Lq, M, L, P); in
        the generalised form (N, Lq, M, K, 2) and (N, Lq, M, K), K the sum of the points list."""
        if self.generalised:
            return self._sampling_v2(query, reference_points, spatial_shapes)
        n, lq, _ = query.shape
        m, nl, p = self.n_heads, self.n_levels, self.n_points
        offsets = self.sampling_offsets(query).view(n, lq, m, nl, p, 2)
        weights = self.attention_weights(query).view(n, lq, m, nl * p).softmax(-1).view(n, lq, m, nl, p)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalise by (W, H)
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(query.dtype)
            loc = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            # boxes (cx, cy, w, h): offsets scaled to half the box size
            loc = (
                reference_points[:, :, None, :, None, :2]
                + offsets / p * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(
                "reference_points must end in 2 (x, y) or 4 (cx, cy, w, h) "
                f"coordinates, got shape {tuple(reference_points.shape)}"
            )
        return loc, weights

    def _sampling_v2(self, query, reference_points, spatial_shapes):
        n, lq, _ = query.shape
        m, k = self.n_heads, sum(self.points_list)
        offsets = self.sampling_offsets(query).view(n, lq, m, k, 2)
        weights = self.attention_weights(query).view(n, lq, m, k).softmax(-1)
        counts = torch.tensor(self.points_list, device=query.device)
        level = torch.repeat_interleave(torch.arange(self.n_levels, device=query.device), counts)  # (K)
        ref = reference_points[:, :, None, level]  # (N, Lq, 1, K, 2 or 4)
        if reference_points.shape[-1] == 2:
            wh = spatial_shapes.flip(-1).to(query.dtype)[level]  # (K, 2) as (W, H)
            loc = ref + offsets / wh
        elif reference_points.shape[-1] == 4:
            per_level = counts.to(query.dtype)[level, None]  # each point's level's count
            loc = ref[..., :2] + offsets / per_level * ref[..., 2:] * 0.5
        else:
            raise ValueError(
                "reference_points must end in 2 (x, y) or 4 (cx, cy, w, h) "
                f"coordinates, got shape {tuple(reference_points.shape)}"
            )
        return loc, weights

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor | None = None,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        query (N, Lq, C); reference_points (N, Lq, L, 2) normalised (x, y) or (N, Lq, L, 4)
        boxes; input_flatten (N, S, C); input_spatial_shapes (L, 2); input_level_start_index
        (L); input_padding_mask (N, S), True on padding. Returns (N, Lq, C).
        """
        n, lq, _ = query.shape
        _, s, _ = input_flatten.shape
        if int(input_spatial_shapes.shape[0]) != self.n_levels:
            raise ValueError(
                f"input_spatial_shapes has {input_spatial_shapes.shape[0]} levels, "
                f"the module was built for n_levels={self.n_levels}"
            )
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, self.n_heads, self.d_model // self.n_heads)
        loc, weights = self.sampling(query, reference_points, input_spatial_shapes)
        # Under autocast the three can differ (bf16 value, float32 locations and weights).
        if self.use_reference:  # grid_sample wants one dtype: the widest, so locations keep theirs
            dtype = torch.promote_types(torch.promote_types(value.dtype, loc.dtype), weights.dtype)
            value, loc, weights = value.to(dtype), loc.to(dtype), weights.to(dtype)
            if self.generalised:
                out = ms_deform_attn_v2_pytorch(
                    value, input_spatial_shapes, loc, weights, self.points_list, self.method
                )
            else:
                out = ms_deform_attn_pytorch(value, input_spatial_shapes, loc, weights)
        else:
            # the op's precision policy (ddetr.ops) takes weights of any floating dtype but
            # locations only in location_dtype (float32 beside a 16-bit value, never rounded)
            loc = loc.to(location_dtype(value.dtype))
            if self.generalised:
                out = ms_deform_attn_v2(value, input_spatial_shapes, loc, weights, self.points_list, self.method)
            else:
                out = ms_deform_attn(
                    value,
                    input_spatial_shapes,
                    loc,
                    weights,
                    level_start_index=input_level_start_index,
                    im2col_step=self.im2col_step,
                )
        return self.output_proj(out.to(query.dtype))
