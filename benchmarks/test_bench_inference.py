"""Inference of the full Deformable DETR (ResNet-50, default variant) on one 800 x 1066
image, the same weights in every case, in one run: the peer (HF transformers'
DeformableDetr, eager and compiled, float32 and bfloat16 autocast), ddetr's eager model,
ddetr.optimize_for_inference uncompiled and compiled (folded batch norm, inductor with
freezing) in float32 and bfloat16, and the portable ONNX export run by onnxruntime on the
CPU. Each case records its compile (or export) time, its speed-ups over ddetr eager
float32, HF eager float32 and the fastest HF case measured before it, and how far its
outputs are from ddetr eager float32."""

import os
import tempfile
import time

import pytest
import torch

from ddetr import optimize_for_inference
from ddetr.bench.harness import devices, run_case, sync
from ddetr.bench.hf_peer import hf_inputs, hf_model
from ddetr.models import build_model

SIZE = (800, 1066)
ROUNDS = {"cpu": 5, "cuda": 20}
# The peer first (HF transformers' DeformableDetr with the same weights, benchmarks/hf_peer.py:
# eager and compiled, float32 and under bfloat16 autocast), then ddetr: the eager model,
# optimize_for_inference without compiling (what `--no-compile` runs) and compiled, and the
# ONNX export in onnxruntime. Every later case gets its speed-ups over the cases before it.
CASES = [
    ("hf-eager", torch.float32),
    ("hf-eager", torch.bfloat16),
    ("hf-compiled", torch.float32),
    ("hf-compiled", torch.bfloat16),
    ("eager", torch.float32),
    ("uncompiled", torch.float32),
    ("uncompiled", torch.bfloat16),
    ("optimised", torch.float32),
    ("optimised", torch.bfloat16),
    ("onnxruntime", torch.float32),
]

_done = {}  # (device, mode, dtype) -> (median, outputs) of the cases run so far


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


def _hf_case(model, images, device, mode, dtype, benchmark, extra):
    """HF's model with ddetr's weights: eager, or torch.compile (inductor, specialised to the
    benchmark's one image size, the best case for it; graph breaks allowed), in float32 or
    under autocast."""
    hf = hf_model(model)
    pixel_values, pixel_mask = hf_inputs(images)
    if mode == "hf-compiled":
        if benchmark.disabled:
            pytest.skip("HF compiled: compile skipped in the smoke run")
        hf = torch.compile(hf, dynamic=False)

    def fn():
        with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            out = hf(pixel_values=pixel_values, pixel_mask=pixel_mask)
        return {"pred_logits": out.logits.float(), "pred_boxes": out.pred_boxes.float()}

    if mode == "hf-compiled":
        t0 = time.perf_counter()
        fn()
        sync(device)
        extra["compile_and_first_call_s"] = time.perf_counter() - t0
    return fn


def _compare(benchmark, device, key, out):
    """Speed-ups over the cases already run, and the outputs' distance from ddetr eager."""
    median = benchmark.stats.stats.median
    names = {
        ("eager", torch.float32): "eager_float32",
        ("hf-eager", torch.float32): "hf_eager_float32",
    }
    for (dev, *case), (other, _) in _done.items():
        if dev == device and tuple(case) in names and tuple(case) != key:
            benchmark.extra_info[f"speedup_vs_{names[tuple(case)]}"] = other / median
    hf = [m for (dev, mode, _), (m, _) in _done.items() if dev == device and mode.startswith("hf-")]
    if hf and not key[0].startswith("hf-"):
        benchmark.extra_info["speedup_vs_best_hf"] = min(hf) / median
    ref = _done.get((device, "eager", torch.float32))
    if ref is not None and key != ("eager", torch.float32):
        ref = ref[1]
        benchmark.extra_info["max_box_diff_vs_eager"] = (out["pred_boxes"] - ref["pred_boxes"]).abs().max().item()
        benchmark.extra_info["max_score_diff_vs_eager"] = (
            (out["pred_logits"].sigmoid() - ref["pred_logits"].sigmoid()).abs().max().item()
        )


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
    elif mode.startswith("hf-"):
        fn = _hf_case(model, images, device, mode, dtype, benchmark, extra)
    elif mode == "onnxruntime":
        fn = _onnxruntime_case(model, images, device, benchmark, extra)
    else:
        # The smoke run (--benchmark-disable) skips the minutes-long compile; the compiled
        # path is tested by tests/test_inference.py.
        fast = optimize_for_inference(model, dtype, compile=mode == "optimised" and not benchmark.disabled)
        t0 = time.perf_counter()
        fast(images)  # compiles (optimised) or warms up
        sync(device)
        if mode == "optimised":
            extra["compile_and_first_call_s"] = time.perf_counter() - t0

        def fn():
            return fast(images)

    dt = str(dtype).split(".")[-1]
    impl = "hf" if mode.startswith("hf-") else "ddetr"
    run_case(benchmark, ("model", "inference", device, dt, "N=1", mode), impl, fn, device, ROUNDS[device], extra=extra)
    if benchmark.disabled or getattr(benchmark, "stats", None) is None:
        return
    out = fn()
    _compare(benchmark, device, (mode, dtype), out)
    _done[(device, mode, dtype)] = (benchmark.stats.stats.median, out)
