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

from ddetr.ops import METHODS, compute_level_start_index, ms_deform_attn, ms_deform_attn_v2

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


def multi_scale_deformable_attention_v2(
    value, value_spatial_shapes, sampling_locations, attention_weights, num_points_list, method="default"
):
    """Group C: rt_detr_v2's, d_fine's and deimv2's core on ddetr's generalised op (points per
    level, "default" or "discrete" sampling)."""
    shapes, _ = _host_shapes(value_spatial_shapes)
    return ms_deform_attn_v2(value, shapes, sampling_locations, attention_weights, num_points_list, method)


def v2_core(method: str):
    """(callable, None) running a group C layer with `method` on ddetr's op, or (None, why it
    stays on transformers' path)."""
    if method not in METHODS:
        return None, f"its sampling method {method!r} is not one of {', '.join(METHODS)}"
    return multi_scale_deformable_attention_v2, None
