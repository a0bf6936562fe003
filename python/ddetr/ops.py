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

Precision follows the value, as `grid_sample` and MMCV do. attention_weights of another
floating dtype are cast to the value's (their gradient comes back in their own);
sampling_locations must share the value's dtype, or be float32 beside a float16 / bfloat16
value (a bfloat16 location is off by up to 0.4 px on a 100-pixel map), anything else is
refused. The kernels compute and accumulate in float32 for the 16-bit types. Under
`torch.autocast` (CPU and CUDA) the value keeps its dtype, whatever it is, so a float32 call
returns exactly what it returns outside autocast: the weights are cast to the value's dtype
and the locations to `location_dtype(value.dtype)` (float32 beside a 16-bit value, never
rounded to 16 bits). In a mixed-precision model the layer that projects the value already
runs in the autocast dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "ms_deform_attn",
    "ms_deform_attn_v2",
    "ms_deform_attn_pytorch",
    "ms_deform_attn_v2_pytorch",
    "compute_level_start_index",
    "METHODS",
]

_op = torch.ops.ddetr.ms_deform_attn
_op_backward = torch.ops.ddetr.ms_deform_attn_backward
_op_v2 = torch.ops.ddetr.ms_deform_attn_v2
_op_v2_backward = torch.ops.ddetr.ms_deform_attn_v2_backward

# Sampling methods of the generalised form: bilinear with zero padding (the 2020 form), or
# the nearest pixel with the border clamped (RT-DETRv2's "discrete"), which has no gradient
# with respect to the locations.
METHODS = ("default", "discrete")


def compute_level_start_index(spatial_shapes: torch.Tensor) -> torch.Tensor:
    """Offsets of each level in the flattened value: 0, H0*W0, H0*W0 + H1*W1, ..."""
    areas = spatial_shapes.prod(1)
    return torch.cat((areas.new_zeros(1), areas.cumsum(0)[:-1]))


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    *,
    level_start_index: torch.Tensor | None = None,
    im2col_step: int = 64,
) -> torch.Tensor:
    """Multi-scale deformable attention; see the module docstring for shapes.

    The argument order is not the compiled op's: (value, spatial_shapes, sampling_locations,
    attention_weights) as HF's `multi_scale_deformable_attention`, the rest keyword-only, so
    that a call in `torch.ops.ddetr.ms_deform_attn`'s order (level_start_index third) fails
    rather than mixing the tensors up. `level_start_index` is derived from `spatial_shapes`
    when not given. `im2col_step` is accepted for code written against the 2020 op and
    otherwise ignored.
    """
    if level_start_index is None:
        level_start_index = compute_level_start_index(spatial_shapes)
    return _op(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step)


def ms_deform_attn_v2(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor | list,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    num_points_list: list[int] | tuple[int, ...],
    method: str = "default",
) -> torch.Tensor:
    """The generalised form of RT-DETRv2, D-FINE and DEIM, in the argument order of HF
    transformers' `multi_scale_deformable_attention_v2`: `num_points_list[l]` points on level
    l, level-major.

    value (N, S, M, D); spatial_shapes (L, 2) int64 or a list of (H, W); sampling_locations
    (N, Lq, M, sum(num_points_list), 2) normalised (x, y); attention_weights
    (N, Lq, M, sum(num_points_list)); method "default" (bilinear, zero padding, as
    `ms_deform_attn`) or "discrete" (the pixel clamp(int(x * W + 0.5), 0, W - 1), no
    location gradient). Returns (N, Lq, M * D). With equal counts and "default" this is
    `ms_deform_attn`.
    """
    if not isinstance(spatial_shapes, torch.Tensor):
        spatial_shapes = torch.tensor([[int(h), int(w)] for h, w in spatial_shapes], dtype=torch.int64)
    return _op_v2(
        value,
        spatial_shapes,
        compute_level_start_index(spatial_shapes),
        sampling_locations,
        attention_weights,
        [int(p) for p in num_points_list],
        method,
    )


# ------------------------------------------------------------------------ precision policy
_HALF = (torch.float16, torch.bfloat16)


def location_dtype(value_dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels read sampling_locations in beside a value of `value_dtype`: float32
    for the 16-bit types (never rounded to 16 bits), else the value's own. The one statement of
    the rule in Python; the C++ checks (ms_deform_attn.cpp) hold it for C++."""
    return torch.float32 if value_dtype in _HALF else value_dtype


def _location_dtypes(value_dtype: torch.dtype) -> tuple:
    """The sampling_locations dtypes the op takes beside a value of `value_dtype` (as the C++
    checks: the value's own, or location_dtype's float32 beside a 16-bit value)."""
    return tuple(dict.fromkeys((value_dtype, location_dtype(value_dtype))))


def _register_autocast(op, name: str, device_type: str) -> None:
    # Not torch.library.register_autocast: that casts every floating input to the autocast
    # dtype, which would round a float32 value and the locations to 16 bits. The value is
    # followed instead (the module docstring); a non-floating argument goes through as it
    # came, for the op to refuse by name.
    key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    keyset = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

    # Both forms start (value, spatial_shapes, level_start_index, locations, weights).
    def autocast(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, *rest):
        if value.is_floating_point():
            if sampling_locations.is_floating_point():
                sampling_locations = sampling_locations.to(location_dtype(value.dtype))
            if attention_weights.is_floating_point():
                attention_weights = attention_weights.to(value.dtype)
        with torch._C._ExcludeDispatchKeyGuard(keyset):
            return op(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, *rest)

    # py_impl: what dynamo and torch.export trace; the library kernel: eager calls.
    op.default.py_impl(getattr(torch._C.DispatchKey, key))(autocast)
    _autocast_lib.impl(name, lambda _keyset, *args: autocast(*args), key, with_keyset=True)


_autocast_lib = torch.library.Library("ddetr", "IMPL")
for _device_type in ("cpu", "cuda"):
    _register_autocast(_op, "ms_deform_attn", _device_type)
    _register_autocast(_op_v2, "ms_deform_attn_v2", _device_type)


# ---------------------------------------------------------------------------- fake kernels
def _fake_checks(value, sampling_locations, attention_weights, loc_dims: int, loc_layout: str):
    # The checks that need no data; the real kernels repeat them and check the rest.
    if value.dim() != 4:
        raise RuntimeError(f"value must have 4 dimensions (N, S, M, D), got {tuple(value.shape)}")
    if sampling_locations.dim() != loc_dims:
        raise RuntimeError(
            f"sampling_locations must have {loc_dims} dimensions {loc_layout}, got {tuple(sampling_locations.shape)}"
        )
    tensors = (value, sampling_locations, attention_weights)
    if len({t.device for t in tensors}) != 1:
        raise RuntimeError(
            "value, sampling_locations and attention_weights must be on one device, "
            f"got {', '.join(str(t.device) for t in tensors)}"
        )
    for t, name in (
        (value, "value"),
        (sampling_locations, "sampling_locations"),
        (attention_weights, "attention_weights"),
    ):
        if not t.is_floating_point():
            raise RuntimeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if sampling_locations.dtype not in _location_dtypes(value.dtype):
        raise RuntimeError(
            f"sampling_locations must be {value.dtype} like value"
            + (" or torch.float32" if value.dtype in _HALF else "")
            + f", got {sampling_locations.dtype}"
        )


@torch.library.register_fake("ddetr::ms_deform_attn")
def _fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
    _fake_checks(value, sampling_locations, attention_weights, 6, "(N, Lq, M, L, P, 2)")
    n, _, m, d = value.shape
    return value.new_empty((n, sampling_locations.shape[1], m * d))


def _check_points(sampling_locations, num_points_list, method):
    if method not in METHODS:
        raise RuntimeError(f'method must be "default" (bilinear) or "discrete" (nearest pixel), got "{method}"')
    if sum(num_points_list) != sampling_locations.shape[3]:
        raise RuntimeError(
            f"sampling_locations has {sampling_locations.shape[3]} points (dimension 3 of shape "
            f"{tuple(sampling_locations.shape)}) but num_points_list sums to {sum(num_points_list)}"
        )


@torch.library.register_fake("ddetr::ms_deform_attn_v2")
def _fake_v2(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, num_points_list, method):
    _fake_checks(value, sampling_locations, attention_weights, 5, "(N, Lq, M, sum of num_points_list, 2)")
    _check_points(sampling_locations, num_points_list, method)
    n, _, m, d = value.shape
    return value.new_empty((n, sampling_locations.shape[1], m * d))


@torch.library.register_fake("ddetr::ms_deform_attn_v2_backward")
def _fake_v2_backward(
    grad_output,
    value,
    spatial_shapes,
    level_start_index,
    sampling_locations,
    attention_weights,
    num_points_list,
    method,
    deterministic=False,
):
    loc_shape = (0,) if method == "discrete" else sampling_locations.shape
    return (
        value.new_empty(value.shape),
        sampling_locations.new_empty(loc_shape),
        attention_weights.new_empty(attention_weights.shape),
    )


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


def _setup_context_v2(ctx, inputs, output):
    value, spatial_shapes, level_start, loc, attn, num_points_list, method = inputs
    ctx.save_for_backward(value, spatial_shapes, level_start, loc, attn)
    ctx.num_points_list, ctx.method = num_points_list, method


def _backward_v2(ctx, grad_output):
    value, spatial_shapes, level_start, loc, attn = ctx.saved_tensors
    if not any(ctx.needs_input_grad[i] for i in (0, 3, 4)):
        return None, None, None, None, None, None, None
    grad_value, grad_loc, grad_attn = _op_v2_backward(
        grad_output.contiguous(),
        value,
        spatial_shapes,
        level_start,
        loc,
        attn,
        ctx.num_points_list,
        ctx.method,
        torch.are_deterministic_algorithms_enabled(),
    )
    if ctx.method == "discrete":  # the nearest pixel is piecewise constant: no location gradient
        grad_loc = None
    return grad_value, None, None, grad_loc, grad_attn, None, None


torch.library.register_autograd("ddetr::ms_deform_attn_v2", _backward_v2, setup_context=_setup_context_v2)
torch.library.register_autograd("ddetr::ms_deform_attn_v2_backward", _no_double_backward, setup_context=_setup_nothing)


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


def ms_deform_attn_v2_pytorch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor | list,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    num_points_list: list[int] | tuple[int, ...],
    method: str = "default",
) -> torch.Tensor:
    """Pure-PyTorch reference of `ms_deform_attn_v2` (same arguments): grid_sample per level
    for "default", a gather at the clamped nearest pixel for "discrete".

    For tests and comparison only (it materialises every sampled value).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    shapes = [
        (int(h), int(w)) for h, w in (spatial_shapes.tolist() if torch.is_tensor(spatial_shapes) else spatial_shapes)
    ]
    n, _, m, d = value.shape
    lq = sampling_locations.shape[1]
    values = value.split([h * w for h, w in shapes], dim=1)
    locs = sampling_locations.split(list(num_points_list), dim=3)
    sampled = []
    for (h, w), v, loc in zip(shapes, values, locs):
        v = v.permute(0, 2, 3, 1).reshape(n * m, d, h, w)  # (N*M, D, H, W)
        g = loc.transpose(1, 2).flatten(0, 1)  # (N*M, Lq, P_l, 2)
        if method == "default":
            sampled.append(F.grid_sample(v, 2 * g - 1, mode="bilinear", padding_mode="zeros", align_corners=False))
        else:
            # the pixel x * W + 0.5 truncated, clamped to the map (NaN to 0) before the cast
            size = torch.tensor([w, h], dtype=g.dtype, device=g.device)
            pix = (g * size + 0.5).nan_to_num(nan=0.0).clamp(min=0).minimum(size - 1).to(torch.int64)
            rows = (pix[..., 1] * w + pix[..., 0]).flatten(1)  # (N*M, Lq*P_l)
            picked = v.flatten(2).gather(2, rows[:, None, :].expand(-1, d, -1))  # (N*M, D, Lq*P_l)
            sampled.append(picked.view(n * m, d, lq, -1))
    attn = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, -1)
    out = (torch.cat(sampled, dim=-1) * attn).sum(-1).view(n, m * d, lq)
    return out.transpose(1, 2).contiguous()
