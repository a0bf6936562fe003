"""to_onnx: the detector as an ONNX file through the torch.export-based exporter, with the
deformable attention translated to GridSample (portable) or TensorRT's plugin node."""

from __future__ import annotations

import torch

from ..models.config import DEFAULTS
from ..util.files import atomic_path
from ._graph import (
    DetectorGraph,
    ExportError,
    check_image_size,
    check_model,
    dynamic_shapes,
    example_inputs,
    input_names,
    output_names,
)

ATTENTION = ("portable", "tensorrt")
# The torch.export-based exporter builds opset 18 (its floor) and converts upwards.
MIN_OPSET, MAX_OPSET, DEFAULT_OPSET = 18, 23, 18


def _translation(attention: str) -> dict:
    try:
        from . import _onnx_ops
    except ImportError as e:
        raise ExportError(f"ONNX export needs onnx and onnxscript ({e}): pip install onnx onnxscript") from None
    fn = {"portable": _onnx_ops.ms_deform_attn_portable, "tensorrt": _onnx_ops.ms_deform_attn_tensorrt}[attention]
    # The generalised form has no TensorRT plugin: always the portable graph.
    return {
        torch.ops.ddetr.ms_deform_attn.default: fn,
        torch.ops.ddetr.ms_deform_attn_v2.default: _onnx_ops.ms_deform_attn_v2_portable,
    }


def to_onnx(
    model,
    path: str,
    image_size=800,
    dynamic: bool = True,
    opset: int = DEFAULT_OPSET,
    attention: str = "portable",
    postprocess: bool = False,
    num_select: int = DEFAULTS["num_select"],
) -> str:
    """Export `model` (a DeformableDETR in eval mode, float32) to the ONNX file `path`.

    Inputs: images (B, 3, H, W) float32, normalised as for the model; mask (B, H, W) bool,
    True on padding (all False for unpadded images); with `postprocess`, target_sizes
    (B, 2) float32 (height, width) that boxes are scaled to. Outputs: pred_logits,
    pred_boxes; with `postprocess` also the top `num_select` scores, labels (int64) and
    boxes (x0, y0, x1, y1), as ddetr's PostProcess.

    `dynamic` (default): batch, height and width are symbolic, from the model's minimum
    side (see size_limits) up; `image_size` (an int or (h, w)) is the example traced, or
    the fixed size with dynamic=False. `attention`: "portable" (standard ops, GridSample,
    for onnxruntime, OpenVINO and any ONNX runtime) or "tensorrt" (one
    MultiscaleDeformableAttnPlugin_TRT node per attention, for TensorRT's plugin).
    Weights are stored inside the file. Returns `path`.
    """
    if attention not in ATTENTION:
        raise ExportError(f"attention must be one of {ATTENTION}, got {attention!r}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"opset must be in [{MIN_OPSET}, {MAX_OPSET}] (the torch.export-based "
            f"exporter builds opset {MIN_OPSET} and converts upwards), got {opset}"
        )
    check_model(model)
    h, w = check_image_size(model, image_size)
    table = _translation(attention)
    graph = DetectorGraph(model, postprocess, num_select).eval()
    args = example_inputs(model, h, w, postprocess, batch=2 if dynamic else 1)
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                graph,
                args,
                dynamo=True,
                opset_version=opset,
                custom_translation_table=table,
                input_names=input_names(postprocess),
                output_names=output_names(postprocess),
                dynamic_shapes=dynamic_shapes(model, postprocess) if dynamic else None,
                external_data=False,
                report=False,
                verbose=False,
            )
    except Exception as e:
        raise ExportError(f"ONNX export failed ({attention} attention, opset {opset}): {e}") from e
    got = {i.domain: i.version for i in program.model_proto.opset_import}.get("", None)
    if got != opset:
        raise ExportError(f"the exporter produced opset {got}, not the requested {opset}")
    _check_complete(program.model_proto, model, attention)
    with atomic_path(path) as tmp:  # whole or not at all: a full disk keeps the previous file
        program.save(tmp, external_data=False)
    return path


def _check_complete(proto, model, attention: str) -> None:
    """Every deformable attention of the model made it into the graph, in the asked form."""
    from ..nn import MSDeformAttn
    from ._onnx_ops import TRT_OP

    expected = sum(isinstance(m, MSDeformAttn) for m in model.modules())
    nodes = _all_nodes(proto)
    if attention == "tensorrt":
        found = sum(n.op_type == TRT_OP for n in nodes)
    else:  # one GridSample per level per attention
        found = sum(n.op_type == "GridSample" for n in nodes) // model.num_feature_levels
    if found != expected:
        raise ExportError(f"the ONNX graph holds {found} deformable attentions ({attention}), the model has {expected}")


def _all_nodes(proto) -> list:
    nodes = list(proto.graph.node)
    for f in proto.functions:
        nodes.extend(f.node)
    return nodes
