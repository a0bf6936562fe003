"""The portable ONNX export (GridSample) of every variant, run by onnxruntime (and OpenVINO
where it installs) at two image sizes from one file, against ddetr's eager outputs."""

import pytest

from conftest import TINY_MODEL
from export_cases import NUM_SELECT, SIZES, assert_matches, inputs, reference, tiny_model

onnx = pytest.importorskip("onnx", reason="the export extra is not installed: pip install 'ddetr[export]'")
pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install 'ddetr[export]'")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'ddetr[export]'")

from ddetr.export import to_onnx  # noqa: E402  (after the skips: it needs them)

pytestmark = pytest.mark.usefixtures("one_thread")


# two-stage holds box-refine's graph too, and test_opset_20_uses_linear_mode exports and runs
# single-scale: each export takes over a minute on 2 CPU cores
@pytest.fixture(scope="module", params=["default", "two-stage"])
def exported(request, tmp_path_factory):
    model = tiny_model(request.param)
    path = str(tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx")
    to_onnx(model, path, image_size=(128, 160), postprocess=True, num_select=NUM_SELECT)
    return request.param, model, path


def _feeds(images, mask, target_sizes):
    return {"images": images.numpy(), "mask": mask.numpy(), "target_sizes": target_sizes.numpy()}


def test_graph_is_standard_onnx(exported):
    _, model, path = exported
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert {i.domain for i in proto.opset_import} <= {"", "ai.onnx"}, "only standard operators"
    ops = [n.op_type for n in proto.graph.node]
    attentions = TINY_MODEL["enc_layers"] + TINY_MODEL["dec_layers"]
    assert ops.count("GridSample") == attentions * model.num_feature_levels
    assert [i.name for i in proto.graph.input] == ["images", "mask", "target_sizes"]
    assert [o.name for o in proto.graph.output] == ["pred_logits", "pred_boxes", "scores", "labels", "boxes"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert all(d.dim_param for d in (dims[0], dims[2], dims[3])), "batch, height and width are dynamic"


def test_onnxruntime_matches_eager(exported):
    _, model, path = exported
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch, h, w in SIZES:
        args = inputs(batch, h, w)
        assert_matches(session.run(None, _feeds(*args)), reference(model, *args))


def test_openvino_matches_eager(exported):
    ov = pytest.importorskip("openvino", reason="openvino is not installed")
    _, model, path = exported
    # f32 explicitly: OpenVINO's CPU plugin otherwise runs bf16 where the CPU has it
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for batch, h, w in SIZES:
        args = inputs(batch, h, w)
        result = compiled(_feeds(*args))
        assert_matches([result[o] for o in compiled.outputs], reference(model, *args))


def test_opset_20_uses_linear_mode(tmp_path):
    # opset 20 renamed GridSample's `bilinear` to `linear`: the converted graph must say so
    model = tiny_model("single-scale")
    path = to_onnx(model, str(tmp_path / "m20.onnx"), image_size=96, opset=20)
    proto = onnx.load(path)
    assert {i.domain: i.version for i in proto.opset_import}[""] == 20
    modes = {
        a.s.decode() for n in proto.graph.node if n.op_type == "GridSample" for a in n.attribute if a.name == "mode"
    }
    assert modes == {"linear"}
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    args = inputs(*SIZES[0])
    assert_matches(session.run(None, {"images": args[0].numpy(), "mask": args[1].numpy()}), reference(model, *args)[:2])
