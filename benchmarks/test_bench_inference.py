"""Inference of the full Deformable DETR (ResNet-50, default variant) on one 800 x 1066
image: the eager float32 model against ddetr.optimize_for_inference in float32 and
bfloat16 (folded batch norm, torch.compile with inductor and freezing), the same weights,
in one run, and the portable ONNX export run by onnxruntime on the CPU. Each optimised case
records its compile (or export) time, its speed-up over eager float32 measured in this run,
and how far its outputs are from eager float32."""

import os
import tempfile
import time

import pytest
import torch

from conftest import devices, run_case, sync
from ddetr import optimize_for_inference
from ddetr.models import build_model

SIZE = (800, 1066)
ROUNDS = {"cpu": 5, "cuda": 20}
CASES = [
    ("eager", torch.float32),
    ("optimised", torch.float32),
    ("optimised", torch.bfloat16),
    ("onnxruntime", torch.float32),
]

_eager = {}  # device -> (median, outputs) of the eager float32 case, which runs first


def _model(device):
    torch.manual_seed(0)
    model = build_model().eval().to(device)
    with torch.no_grad():  # a box head that is not zero, so boxes depend on the features
        torch.nn.init.normal_(model.bbox_embed[0].layers[-1].weight, std=0.01)
    return model


def _onnxruntime_case(model, images, device, benchmark, extra):
    """The portable ONNX export (GridSample attention) run by onnxruntime on the CPU."""
    if device != "cpu":
        pytest.skip("onnxruntime runs here on the CPU execution provider")
    ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    pytest.importorskip("onnxscript", reason="the export extra is not installed")
    import numpy as np

    from ddetr.export import to_onnx

    if benchmark.disabled:  # the smoke run skips the minutes-long export
        pytest.skip("onnxruntime case: export skipped in the smoke run")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = to_onnx(model, os.path.join(tmp, "model.onnx"), image_size=SIZE)
        extra["export_s"] = time.perf_counter() - t0
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {"images": images[0][None].numpy(), "mask": np.zeros((1, *SIZE), dtype=bool)}

    def fn():
        logits, boxes = session.run(None, feeds)
        return {"pred_logits": torch.from_numpy(logits), "pred_boxes": torch.from_numpy(boxes)}

    return fn


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("mode, dtype", CASES, ids=[f"{m}-{str(d).split('.')[-1]}" for m, d in CASES])
def test_inference(benchmark, mode, dtype, device):
    model = _model(device)
    images = [torch.randn(3, *SIZE, generator=torch.Generator().manual_seed(0)).to(device)]
    extra = dict(model="deformable_detr_r50", image_size=f"{SIZE[0]}x{SIZE[1]}", batch=1, mode=mode)
    if mode == "eager":

        def fn():
            with torch.no_grad():
                return model(images)
    elif mode == "onnxruntime":
        fn = _onnxruntime_case(model, images, device, benchmark, extra)
    else:
        # The smoke run (--benchmark-disable) skips the minutes-long compile; the compiled
        # path is tested by tests/test_inference.py.
        fast = optimize_for_inference(model, dtype, compile=not benchmark.disabled)
        t0 = time.perf_counter()
        fast(images)  # compiles
        sync(device)
        extra["compile_and_first_call_s"] = time.perf_counter() - t0

        def fn():
            return fast(images)

    dt = str(dtype).split(".")[-1]
    run_case(
        benchmark, ("model", "inference", device, dt, "N=1", mode), "ddetr", fn, device, ROUNDS[device], extra=extra
    )
    stats = getattr(benchmark, "stats", None)
    if benchmark.disabled or stats is None:
        return
    if mode == "eager":
        _eager[device] = (stats.stats.median, fn())
    elif device in _eager:
        median, ref = _eager[device]
        out = fn()
        benchmark.extra_info["speedup_vs_eager_float32"] = median / stats.stats.median
        benchmark.extra_info["max_box_diff_vs_eager"] = (out["pred_boxes"] - ref["pred_boxes"]).abs().max().item()
        benchmark.extra_info["max_score_diff_vs_eager"] = (
            (out["pred_logits"].sigmoid() - ref["pred_logits"].sigmoid()).abs().max().item()
        )
