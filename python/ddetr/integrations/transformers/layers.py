"""ddetr's op in the three shapes HF transformers calls multi-scale deformable attention in.

- Group A: the `MultiScaleDeformableAttention` layer (the 2020 op's arguments, behind the
  `kernels` hook). `MultiScaleDeformableAttention` here is a `kernels` layer: no `__init__`,
  no members but `has_backward` and `can_torch_compile`, the same forward arguments.
- Group B: the module-level `multi_scale_deformable_attention(value, shapes, locations,
  weights)` of mask2former and oneformer.
- Group C: `multi_scale_deformable_attention_v2(value, shapes, locations, weights,
  num_points_list, method)` of rt_detr_v2, d_fine and deimv2, locations (N, Lq, M, sum(P), 2).

Each calls the op exactly once. The spatial shapes go to the op as CPU tensors built from
transformers' Python list (the op reads them on the host): no device-to-host copy, and so
no CUDA synchronisation, per layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import ddetr
from ddetr.ops import compute_level_start_index, ms_deform_attn

LAYER_NAME = "MultiScaleDeformableAttention"  # transformers' name for the group A layer


def op_has_kernel(device_type: str) -> bool:
    """Whether this ddetr build runs the op on `device_type` ("cpu", "cuda", ...)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("ddetr::ms_deform_attn", device_type.upper())


def _host_shapes(shapes) -> tuple[torch.Tensor, torch.Tensor]:
    """(spatial_shapes, level_start_index) as int64 CPU tensors, from a list of (H, W) or an
    (L, 2) tensor."""
    if isinstance(shapes, torch.Tensor):
        shapes = shapes.to("cpu", torch.int64)
    else:
        shapes = torch.tensor([[int(h), int(w)] for h, w in shapes], dtype=torch.int64)
    return shapes, compute_level_start_index(shapes)


class MultiScaleDeformableAttention(torch.nn.Module):
    """Group A: transformers' `MultiScaleDeformableAttention.forward` on ddetr's op."""

    has_backward = True
    can_torch_compile = True

    def forward(
        self,
        value,
        value_spatial_shapes,
        value_spatial_shapes_list,
        level_start_index,
        sampling_locations,
        attention_weights,
        im2col_step,
    ):
        if value_spatial_shapes_list is not None:
            value_spatial_shapes, level_start_index = _host_shapes(value_spatial_shapes_list)
        return ms_deform_attn(
            value,
            value_spatial_shapes,
            sampling_locations,
            attention_weights,
            level_start_index=level_start_index,
            im2col_step=im2col_step,
        )


def multi_scale_deformable_attention(value, value_spatial_shapes, sampling_locations, attention_weights):
    """Group B: mask2former's and oneformer's module-level function on ddetr's op."""
    shapes, starts = _host_shapes(value_spatial_shapes)
    return ms_deform_attn(value, shapes, sampling_locations, attention_weights, level_start_index=starts)


def v2_core(method: str):
    """(callable, None) running a group C layer with `method` on ddetr's op, or (None, why it
    stays on transformers' path)."""
    if method not in ("default", "discrete"):
        return None, f"its sampling method {method!r} is neither 'default' nor 'discrete'"
    native = getattr(ddetr, "ms_deform_attn_v2", None)
    if native is not None:
        return native, None
    if method == "discrete":  # until ms_deform_attn_v2: delete with _v2_on_todays_op
        return None, "discrete sampling needs ddetr.ms_deform_attn_v2, which this ddetr build lacks"
    return _v2_on_todays_op, None


_OUTSIDE = -1.0  # a normalised location wholly outside the map: the op reads nothing there


def _v2_on_todays_op(value, value_spatial_shapes, sampling_locations, attention_weights, num_points_list, method):
    """Until every build has ddetr.ms_deform_attn_v2: "default" sampling on the 2020-layout op.
    Equal point counts are a reshape; ragged ones are padded to the largest count with zero
    weights at locations outside the map, which adds exact zeros (gradients included)."""
    if method != "default":
        raise ValueError(f"ddetr's op without ms_deform_attn_v2 takes only method='default', got {method!r}")
    shapes, starts = _host_shapes(value_spatial_shapes)
    n, lq, m, _ = attention_weights.shape
    levels, most = len(num_points_list), max(num_points_list)
    if min(num_points_list) == most:
        locations = sampling_locations.reshape(n, lq, m, levels, most, 2)
        weights = attention_weights.reshape(n, lq, m, levels, most)
    else:
        pads = [most - p for p in num_points_list]
        locations = torch.stack(
            [
                F.pad(loc, (0, 0, 0, pad), value=_OUTSIDE)
                for loc, pad in zip(sampling_locations.split(num_points_list, dim=3), pads)
            ],
            dim=3,
        )
        weights = torch.stack(
            [F.pad(w, (0, pad)) for w, pad in zip(attention_weights.split(num_points_list, dim=3), pads)], dim=3
        )
    return ms_deform_attn(value, shapes, locations, weights, level_start_index=starts)
