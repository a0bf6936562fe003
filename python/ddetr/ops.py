"""The ms_deform_attn op: Python entry point, autograd and fake (meta) registrations, and
the pure-PyTorch reference used by tests and benchmarks.

The compiled op is `torch.ops.ddetr.ms_deform_attn(value, spatial_shapes,
level_start_index, sampling_locations, attention_weights, im2col_step)` with the layout
of the 2020 `MSDeformAttnFunction`:

- value (N, S, M, D); spatial_shapes (L, 2) int64 as (H, W); level_start_index (L) int64
- sampling_locations (N, Lq, M, L, P, 2) normalised (x, y) in [0, 1]
- attention_weights (N, Lq, M, L, P); output (N, Lq, M * D)

Sampling is bilinear with zero padding and align_corners=False, exactly `grid_sample` on
2 * loc - 1. Locations outside the map, or non-finite (NaN, inf), contribute zero and get
zero gradient.

Precision: attention_weights share the value's dtype; sampling_locations too, or float32
beside a float16 / bfloat16 value (a bfloat16 location is off by up to 0.4 px on a
100-pixel map); the kernels compute and accumulate in float32 for the 16-bit types. Under
`torch.autocast` (CPU and CUDA) the op casts value and attention_weights to the autocast
dtype and sampling_locations to float32, whatever the surrounding layers produced.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ms_deform_attn", "ms_deform_attn_pytorch", "compute_level_start_index"]

_op = torch.ops.ddetr.ms_deform_attn
_op_backward = torch.ops.ddetr.ms_deform_attn_backward


def compute_level_start_index(spatial_shapes: torch.Tensor) -> torch.Tensor:
    """Offsets of each level in the flattened value: 0, H0*W0, H0*W0 + H1*W1, ..."""
    areas = spatial_shapes.prod(1)
    return torch.cat((areas.new_zeros(1), areas.cumsum(0)[:-1]))


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    level_start_index: torch.Tensor | None = None,
    im2col_step: int = 64,
) -> torch.Tensor:
    """Multi-scale deformable attention; see the module docstring for shapes.

    `level_start_index` is derived from `spatial_shapes` when not given. `im2col_step` is
    accepted for code written against the 2020 op and otherwise ignored.
    """
    if level_start_index is None:
        level_start_index = compute_level_start_index(spatial_shapes)
    return _op(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step)


# ------------------------------------------------------------------------ precision policy
_HALF = (torch.float16, torch.bfloat16)


def _location_dtypes(value_dtype: torch.dtype) -> tuple:
    """The sampling_locations dtypes the op takes beside a value of `value_dtype` (as the C++
    checks: the value's own, or float32 beside a 16-bit value)."""
    return (value_dtype, torch.float32) if value_dtype in _HALF else (value_dtype,)


def _register_autocast(device_type: str) -> None:
    # Not torch.library.register_autocast: that casts every floating input to one dtype,
    # which would round the locations to 16 bits.
    key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    keyset = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

    def autocast(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
        dtype = torch.get_autocast_dtype(device_type)
        with torch._C._ExcludeDispatchKeyGuard(keyset):
            return _op(
                value.to(dtype),
                spatial_shapes,
                level_start_index,
                sampling_locations.to(torch.float32),
                attention_weights.to(dtype),
                im2col_step,
            )

    # py_impl: what dynamo and torch.export trace; the library kernel: eager calls.
    _op.default.py_impl(getattr(torch._C.DispatchKey, key))(autocast)
    _autocast_lib.impl("ms_deform_attn", lambda _keyset, *args: autocast(*args), key, with_keyset=True)


_autocast_lib = torch.library.Library("ddetr", "IMPL")
for _device_type in ("cpu", "cuda"):
    _register_autocast(_device_type)


# ---------------------------------------------------------------------------- fake kernels
@torch.library.register_fake("ddetr::ms_deform_attn")
def _fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
    # The checks that need no data; the real kernels repeat them and check the rest.
    if value.dim() != 4:
        raise RuntimeError(f"value must have 4 dimensions (N, S, M, D), got {tuple(value.shape)}")
    if sampling_locations.dim() != 6:
        raise RuntimeError(
            f"sampling_locations must have 6 dimensions (N, Lq, M, L, P, 2), got {tuple(sampling_locations.shape)}"
        )
    tensors = (value, sampling_locations, attention_weights)
    if len({t.device for t in tensors}) != 1:
        raise RuntimeError(
            "value, sampling_locations and attention_weights must be on one device, "
            f"got {', '.join(str(t.device) for t in tensors)}"
        )
    if attention_weights.dtype != value.dtype:
        raise RuntimeError(f"attention_weights must be {value.dtype} like value, got {attention_weights.dtype}")
    if sampling_locations.dtype not in _location_dtypes(value.dtype):
        raise RuntimeError(
            f"sampling_locations must be {value.dtype} like value"
            + (" or torch.float32" if value.dtype in _HALF else "")
            + f", got {sampling_locations.dtype}"
        )
    n, _, m, d = value.shape
    return value.new_empty((n, sampling_locations.shape[1], m * d))


@torch.library.register_fake("ddetr::ms_deform_attn_backward")
def _fake_backward(
    grad_output,
    value,
    spatial_shapes,
    level_start_index,
    sampling_locations,
    attention_weights,
    im2col_step,
    deterministic=False,
):
    # contiguous, as both backends return them
    return (
        value.new_empty(value.shape),
        sampling_locations.new_empty(sampling_locations.shape),
        attention_weights.new_empty(attention_weights.shape),
    )


# -------------------------------------------------------------------------------- autograd
def _setup_context(ctx, inputs, output):
    value, spatial_shapes, level_start, loc, attn, im2col_step = inputs
    ctx.save_for_backward(value, spatial_shapes, level_start, loc, attn)
    ctx.im2col_step = im2col_step


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start, loc, attn = ctx.saved_tensors
    if not any(ctx.needs_input_grad[i] for i in (0, 3, 4)):
        return None, None, None, None, None, None
    # The stable ABI cannot read torch's determinism flag, so it is passed down: the CUDA
    # backward then orders its value-gradient sums instead of using atomics.
    grad_value, grad_loc, grad_attn = _op_backward(
        grad_output.contiguous(),
        value,
        spatial_shapes,
        level_start,
        loc,
        attn,
        ctx.im2col_step,
        torch.are_deterministic_algorithms_enabled(),
    )
    return grad_value, None, None, grad_loc, grad_attn, None


torch.library.register_autograd("ddetr::ms_deform_attn", _backward, setup_context=_setup_context)


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "ms_deform_attn does not support double backward (gradients of its gradients); "
        "use ddetr.ops.ms_deform_attn_pytorch where second derivatives are needed"
    )


def _setup_nothing(ctx, inputs, output):
    pass


torch.library.register_autograd("ddetr::ms_deform_attn_backward", _no_double_backward, setup_context=_setup_nothing)


# ------------------------------------------------------------------------ the reference
def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Pure-PyTorch reference (grid_sample per level, as in the 2020 repository's test).

    For tests and comparison only: it materialises every sampled value, so it is slow and
    memory-hungry. Differentiable (also twice) through grid_sample.
    """
    n, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    areas = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    value_list = value.split(areas, dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes.tolist()):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        v = value_list[level].flatten(2).transpose(1, 2).reshape(n * m, d, int(h), int(w))
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (N*M, D, Lq, P)
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L*P)
    attn = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, n_levels * n_points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * attn).sum(-1).view(n, m * d, lq)
    return out.transpose(1, 2).contiguous()
