"""How eval and predict run a model (engine/inference_model.py): --dtype, --compile on / off / auto
(compile only when the batches still to run would save more than compiling costs), and
both commands with --dtype bfloat16 against float32. Compiles use dynamo's eager backend
(the same full-graph trace, at a fraction of inductor's cost)."""

import json

import pytest
import torch

from conftest import SYNTHETIC, images, tiny_model
from ddetr import cli
from ddetr.engine import inference_model as R
from ddetr.inference import optimize_for_inference

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cheap_compile(monkeypatch):
    """optimize_for_inference with dynamo's eager backend, counting compiles."""
    compiles = []

    def fake(model, dtype, compile):
        compiles.append(compile)
        return optimize_for_inference(model, dtype, compile, backend="eager")

    monkeypatch.setattr(R, "optimize_for_inference", fake)
    return compiles


def _model():
    return tiny_model(num_classes=3)


def _images():
    return [torch.randn(3, 96, 128, generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("mode, compiled", [(True, True), (False, False)])
def test_compile_on_and_off(cheap_compile, mode, compiled):
    run = R.InferenceModel(_model(), torch.float32, mode, total=100, log=lambda m: None)
    for _ in range(3):
        run(_images())
    assert (run.compiled is not None) == compiled
    # one copy of the model built: compiled from the start, or uncompiled for good
    assert cheap_compile == ([True] if compiled else [False])


def test_auto_decides_by_expected_saving(cheap_compile, monkeypatch):
    monkeypatch.setattr(R, "COMPILE_COST_S", 90.0)
    monkeypatch.setattr(R, "COMPILE_SAVES", 0.3)
    logged = []
    run = R.InferenceModel(_model(), torch.float32, "auto", total=102, log=logged.append)
    run.calls = 2  # 100 batches left
    run._decide(2.0)  # would save 100 * 2 s * 0.3 = 60 s < 90 s
    assert run.compiled is None and not logged
    run._decide(4.0)  # 120 s > 90 s
    assert run.compiled is not None and "--compile auto" in logged[0] and "--no-compile" in logged[0]


def test_auto_runs_two_calls_uncompiled_then_compiled(cheap_compile, monkeypatch):
    monkeypatch.setattr(R, "COMPILE_COST_S", 0.0)  # any saving pays
    model = _model()
    run = R.InferenceModel(model, torch.float32, "auto", total=4, log=lambda m: None)
    outs = [run(_images()) for _ in range(4)]
    assert cheap_compile == [False, True] and run.compiled is not None
    with torch.no_grad():
        ref = model(_images())
    for out in outs:  # compiled or not, the folded model's outputs
        for k in ("pred_logits", "pred_boxes"):
            torch.testing.assert_close(out[k], ref[k], rtol=1e-4, atol=1e-5)


def test_auto_never_compiles_a_short_run(cheap_compile):
    run = R.InferenceModel(_model(), torch.float32, "auto", total=3, log=lambda m: None)
    for _ in range(3):
        run(_images())
    assert cheap_compile == [False] and run.compiled is None


def test_auto_is_a_cpu_rule(cheap_compile, monkeypatch):
    """Its figures were measured on CPUs: on any other device auto leaves the model uncompiled
    (the model runs on the CPU here; only the device the rule reads is another)."""
    monkeypatch.setattr(R, "COMPILE_COST_S", 0.0)  # on the CPU, any saving would pay
    run = R.InferenceModel(_model(), torch.float32, "auto", total=4, log=lambda m: None)
    run.device_type = "cuda"
    for _ in range(4):
        run(_images())
    assert cheap_compile == [False] and run.compiled is None


def test_bad_dtype_names_the_option():
    with pytest.raises(cli.UserError, match=r"--dtype float64: expected one of float32, bfloat16, float16"):
        R.parse_dtype("float64")


def test_eval_in_bfloat16(trained, tmp_path):
    data, ckpt = trained.data, trained.checkpoint
    metrics = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        argv = ["eval", "--checkpoint", str(ckpt), "--coco-path", data, "--output-dir", str(out), "--dtype", dtype]
        assert cli.main([*argv, "--num-workers", "0", "--quiet"]) == 0
        metrics[dtype] = json.loads((out / "metrics.json").read_text())
    assert metrics["bfloat16"]["dtype"] == "bfloat16" and metrics["float32"]["dtype"] == "float32"
    assert metrics["bfloat16"]["compiled"] is False  # a few batches: auto does not compile
    assert metrics["bfloat16"]["images"] == metrics["float32"]["images"] == SYNTHETIC["num_val"]


def test_predict_in_bfloat16_matches_float32(trained, tmp_path):
    data, ckpt = trained.data, trained.checkpoint
    image = images(data)[0]
    dets = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        argv = ["predict", image, "--checkpoint", str(ckpt), "--output-dir", str(out), "--threshold", "0"]
        assert cli.main([*argv, "--dtype", dtype, "--no-compile"]) == 0
        dets[dtype] = json.loads((out / "detections.json").read_text())[0]["detections"]
    assert len(dets["bfloat16"]) == len(dets["float32"]) > 0
    # each float32 detection has a bfloat16 one of the same label with its box within 1 px
    # and its score within 0.01 (bfloat16 keeps 8 bits of mantissa; 64 px images)
    for d in dets["float32"]:
        near = [
            e
            for e in dets["bfloat16"]
            if e["label"] == d["label"] and max(abs(a - b) for a, b in zip(e["box"], d["box"])) <= 1.0
        ]
        assert near and min(abs(e["score"] - d["score"]) for e in near) <= 0.01, d
