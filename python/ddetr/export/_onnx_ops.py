"""ONNX translations of `ddetr::ms_deform_attn` for the torch.export-based ONNX exporter
(`custom_translation_table`). Both are traced by onnxscript at export time: Python loops
over the levels, static sizes (heads, channels, levels, points) read from the inputs'
shapes, image-dependent sizes computed in the graph.

- portable: standard ONNX ops, one GridSample per level, the math of
  ddetr.ops.ms_deform_attn_pytorch (bilinear, zero padding, align_corners=0, grid = 2 loc - 1);
  for `ddetr::ms_deform_attn_v2` (points per level) the same, or for its discrete method one
  Gather per level at the clamped nearest pixel.
- tensorrt: one node of TensorRT's built-in plugin `MultiscaleDeformableAttnPlugin_TRT`.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx.defs import OpSchema
from onnxscript import opset18 as op
from onnxscript import values

# The exporter builds opset 18 (torchlib's) and converts to the requested opset after;
# onnxscript's converter renames GridSample's mode `bilinear` to `linear` at opset 20.
BUILD_OPSET = 18

TRT_OP = "MultiscaleDeformableAttnPlugin_TRT"
# TensorRT's ONNX parser imports a node it has no importer for as a plugin, looked up by
# op_type, `plugin_version` and `plugin_namespace` (the node's domain is not used). A
# non-default domain keeps onnx.checker and other tools from looking for an ONNX schema.
TRT_DOMAIN = "trt.plugins"
# Version "1" is the IPluginV2DynamicExt plugin shipped in TensorRT's plugin library since
# 8.6 (earlier only in the TensorRT OSS repository) and still registered in 10.x.
TRT_PLUGIN_VERSION = "1"


def _shape(x, start: int, end: int):
    return op.Shape(x, start=start, end=end)


def _int64(*values_):
    return op.Constant(value=onnx.helper.make_tensor("c", onnx.TensorProto.INT64, [len(values_)], list(values_)))


def ms_deform_attn_portable(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step: int = 64
):
    """(N, S, M, D), (L, 2), (L), (N, Lq, M, L, P, 2), (N, Lq, M, L, P) -> (N, Lq, M*D)."""
    m, d = int(value.shape[2]), int(value.shape[3])
    n_levels, n_points = int(sampling_locations.shape[3]), int(sampling_locations.shape[4])
    n = _shape(value, 0, 1)
    lq = _shape(sampling_locations, 1, 2)
    # (N, Lq, M, L, P, 2) -> (N, M, Lq, L, P, 2), grid_sample's [-1, 1] coordinates
    grids = op.Sub(
        op.Mul(
            op.Transpose(sampling_locations, perm=[0, 2, 1, 3, 4, 5]),
            op.CastLike(op.Constant(value_float=2.0), sampling_locations),
        ),
        op.CastLike(op.Constant(value_float=1.0), sampling_locations),
    )
    # (N, S, M, D) -> (N, M, D, S)
    value_t = op.Transpose(value, perm=[0, 2, 3, 1])
    sampled = []
    for lvl in range(n_levels):
        hw = op.Gather(spatial_shapes, _int64(lvl), axis=0)  # (1, 2): H, W
        start = op.Gather(level_start_index, _int64(lvl), axis=0)  # (1)
        end = op.Add(start, op.ReduceProd(hw, _int64(1), keepdims=0))  # start + H * W
        v = op.Slice(value_t, start, end, _int64(3))  # (N, M, D, H*W)
        v = op.Reshape(v, op.Concat(_int64(-1, d), op.Reshape(hw, _int64(2)), axis=0))
        g = op.Gather(grids, _int64(lvl), axis=3)  # (N, M, Lq, 1, P, 2)
        g = op.Reshape(g, op.Concat(_int64(-1), lq, _int64(n_points, 2), axis=0))
        sampled.append(op.GridSample(v, g, mode="bilinear", padding_mode="zeros", align_corners=0))  # (N*M, D, Lq, P)
    stacked = op.Concat(*sampled, axis=3) if n_levels > 1 else sampled[0]  # (N*M, D, Lq, L*P)
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L*P)
    attn = op.Reshape(
        op.Transpose(op.CastLike(attention_weights, value), perm=[0, 2, 1, 3, 4]),  # the op's cast
        op.Concat(_int64(-1, 1), lq, _int64(n_levels * n_points), axis=0),
    )
    out = op.ReduceSum(op.Mul(stacked, attn), _int64(3), keepdims=0)  # (N*M, D, Lq)
    out = op.Reshape(out, op.Concat(n, _int64(m * d), lq, axis=0))
    return op.Transpose(out, perm=[0, 2, 1])  # (N, Lq, M*D)


def ms_deform_attn_v2_portable(
    value,
    spatial_shapes,
    level_start_index,
    sampling_locations,
    attention_weights,
    num_points_list: Sequence[int],
    method: str,
):
    """(N, S, M, D), (L, 2), (L), (N, Lq, M, K, 2), (N, Lq, M, K) -> (N, Lq, M*D), K the sum of
    `num_points_list`. "default": GridSample per level, as above; "discrete": the pixel
    min(max(x * W + 0.5, 0), W - 1) truncated (the op's rounding), read with one Gather per level
    from the value's rows."""
    m, d = int(value.shape[2]), int(value.shape[3])
    points = [int(p) for p in num_points_list]
    n = _shape(value, 0, 1)
    lq = _shape(sampling_locations, 1, 2)
    # (N, Lq, M, K, 2) -> (N*M, Lq, K, 2)
    locs = op.Reshape(
        op.Transpose(sampling_locations, perm=[0, 2, 1, 3, 4]),
        op.Concat(_int64(-1), lq, _int64(sum(points), 2), axis=0),
    )
    one = op.CastLike(op.Constant(value_float=1.0), sampling_locations)
    if method == "discrete":
        # value rows (N*M*S, D), and the first row of each (n, m): (N*M, 1, 1, 1)
        rows = op.Reshape(op.Transpose(value, perm=[0, 2, 1, 3]), _int64(-1, d))
        nm = op.Squeeze(op.Mul(n, _int64(m)), _int64(0))
        first = op.Mul(op.Range(op.Constant(value_int=0), nm, op.Constant(value_int=1)), _shape(value, 1, 2))
        first = op.Reshape(first, _int64(-1, 1, 1, 1))
        half = op.CastLike(op.Constant(value_float=0.5), sampling_locations)
        zero = op.CastLike(op.Constant(value_float=0.0), sampling_locations)
    else:
        grids = op.Sub(op.Mul(locs, op.CastLike(op.Constant(value_float=2.0), locs)), one)
    sampled = []
    offset = 0
    for lvl, p in enumerate(points):
        hw = op.Reshape(op.Gather(spatial_shapes, _int64(lvl), axis=0), _int64(2))  # (2): H, W
        start = op.Gather(level_start_index, _int64(lvl), axis=0)  # (1)
        if method == "discrete":
            g = op.Slice(locs, _int64(offset), _int64(offset + p), _int64(2))  # (N*M, Lq, P, 2)
            h, w = op.Slice(hw, _int64(0), _int64(1)), op.Slice(hw, _int64(1), _int64(2))  # (1) each
            size = op.CastLike(op.Concat(w, h, axis=0), sampling_locations)  # (2): W, H
            pix = op.Min(op.Max(op.Add(op.Mul(g, size), half), zero), op.Sub(size, one))
            pix = op.Cast(pix, to=onnx.TensorProto.INT64)  # truncates: the clamped pixel
            x = op.Gather(pix, _int64(0), axis=3)  # (N*M, Lq, P, 1)
            y = op.Gather(pix, _int64(1), axis=3)
            idx = op.Add(op.Add(first, start), op.Add(op.Mul(y, w), x))
            picked = op.Gather(rows, op.Squeeze(idx, _int64(3)), axis=0)  # (N*M, Lq, P, D)
            sampled.append(op.Transpose(picked, perm=[0, 3, 1, 2]))  # (N*M, D, Lq, P)
        else:
            end = op.Add(start, op.ReduceProd(hw, _int64(0), keepdims=1))  # start + H * W
            v = op.Slice(op.Transpose(value, perm=[0, 2, 3, 1]), start, end, _int64(3))  # (N, M, D, H*W)
            v = op.Reshape(v, op.Concat(_int64(-1, d), hw, axis=0))
            g = op.Slice(grids, _int64(offset), _int64(offset + p), _int64(2))
            sampled.append(op.GridSample(v, g, mode="bilinear", padding_mode="zeros", align_corners=0))
        offset += p
    stacked = op.Concat(*sampled, axis=3) if len(points) > 1 else sampled[0]  # (N*M, D, Lq, K)
    attn = op.Reshape(
        op.Transpose(op.CastLike(attention_weights, value), perm=[0, 2, 1, 3]),
        op.Concat(_int64(-1, 1), lq, _int64(sum(points)), axis=0),
    )
    out = op.ReduceSum(op.Mul(stacked, attn), _int64(3), keepdims=0)  # (N*M, D, Lq)
    out = op.Reshape(out, op.Concat(n, _int64(m * d), lq, axis=0))
    return op.Transpose(out, perm=[0, 2, 1])  # (N, Lq, M*D)


def _trt_schema() -> OpSchema:
    p = OpSchema.FormalParameter
    return OpSchema(
        TRT_OP,
        TRT_DOMAIN,
        1,
        inputs=[
            p("value", "T"),
            p("spatial_shapes", "tensor(int32)"),
            p("level_start_index", "tensor(int32)"),
            p("sampling_locations", "T"),
            p("attention_weights", "T"),
        ],
        outputs=[p("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "")],
        attributes=[
            OpSchema.Attribute("plugin_version", OpSchema.AttrType.STRING, "", required=True),
            OpSchema.Attribute("plugin_namespace", OpSchema.AttrType.STRING, "", required=True),
        ],
    )


_trt_op = values.Op(values.Opset(TRT_DOMAIN, 1), TRT_OP, _trt_schema())


def ms_deform_attn_tensorrt(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step: int = 64
):
    """One plugin node in the plugin's own layout: int32 shapes and level starts, a 4-D
    output (N, Lq, M, D), reshaped to the op's (N, Lq, M*D) after it."""
    m, d = int(value.shape[2]), int(value.shape[3])
    out = _trt_op(
        value,
        op.Cast(spatial_shapes, to=onnx.TensorProto.INT32),
        op.Cast(level_start_index, to=onnx.TensorProto.INT32),
        sampling_locations,
        op.CastLike(attention_weights, value),  # the op's cast
        plugin_version=TRT_PLUGIN_VERSION,
        plugin_namespace="",
    )
    return op.Reshape(out, _int64(0, 0, m * d))
