"""Deployment: the detector exported to ONNX (onnxruntime, OpenVINO, TensorRT), as a
torch.export program, and as an AOTInductor package.

    ddetr.export.to_onnx(model.eval(), "model.onnx")                      # portable (GridSample)
    ddetr.export.to_onnx(model.eval(), "trt.onnx", attention="tensorrt")  # TensorRT plugin nodes
    ep = ddetr.export.export_program(model.eval())                        # torch.export, dynamic sizes
    ddetr.export.to_aoti(model.eval(), "model.pt2")                       # AOTInductor package

Every graph takes images (B, 3, H, W) and mask (B, H, W) (True on padding) and returns
pred_logits and pred_boxes (plus scores, labels, boxes with postprocess=True). The AOTI
package calls the compiled op through the dispatcher: load the op library first
(`import ddetr`, or `torch.ops.load_library(ddetr.export.op_library_path())`).
"""

from __future__ import annotations

from ._aoti import load_aoti, op_library_path, to_aoti
from ._graph import DetectorGraph, ExportError, export_program, size_limits
from ._onnx import DEFAULT_OPSET, to_onnx

__all__ = [
    "DEFAULT_OPSET",
    "DetectorGraph",
    "ExportError",
    "export_program",
    "load_aoti",
    "op_library_path",
    "size_limits",
    "to_aoti",
    "to_onnx",
]
