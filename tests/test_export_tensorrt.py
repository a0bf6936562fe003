"""The TensorRT form: one MultiscaleDeformableAttnPlugin_TRT node per attention, in the
plugin's layout. No TensorRT here: the graph runs in onnxruntime with a Python
implementation of the node (onnxruntime-extensions) that calls ddetr's op on the node's
inputs as the plugin receives them (int32 shapes and starts, 4-D output)."""

import pytest
import torch

from conftest import TINY_MODEL
from export_cases import SIZES, assert_matches, inputs, reference, tiny_model

onnx = pytest.importorskip("onnx", reason="the export extra is not installed: pip install 'ddetr[export]'")
pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install 'ddetr[export]'")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'ddetr[export]'")

from ddetr.export import to_onnx  # noqa: E402  (after the skips: it needs them)
from ddetr.export._onnx_ops import TRT_OP, TRT_PLUGIN_VERSION  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
calls = []


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_model("box-refine")
    path = str(tmp_path_factory.mktemp("trt") / "trt.onnx")
    to_onnx(model, path, image_size=(128, 160), attention="tensorrt")
    return model, path


def test_plugin_nodes(exported):
    _, path = exported
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    nodes = [n for n in proto.graph.node if n.op_type == TRT_OP]
    assert len(nodes) == TINY_MODEL["enc_layers"] + TINY_MODEL["dec_layers"]
    assert not any(n.op_type == "GridSample" for n in proto.graph.node)
    for n in nodes:
        attrs = {a.name: a.s.decode() for a in n.attribute}
        assert attrs == {"plugin_version": TRT_PLUGIN_VERSION, "plugin_namespace": ""}
        assert len(n.input) == 5 and len(n.output) == 1


def _with_python_plugin(path):
    """The model with its plugin nodes moved to onnxruntime-extensions' Python-op domain,
    and a session options object that runs them through ddetr's op."""
    ext = pytest.importorskip("onnxruntime_extensions", reason="onnxruntime-extensions is not installed")
    t = ext.PyCustomOpDef

    @ext.onnx_op(
        op_type=TRT_OP,
        inputs=[t.dt_float, t.dt_int32, t.dt_int32, t.dt_float, t.dt_float],
        outputs=[t.dt_float],
        attrs={"plugin_version": t.dt_string, "plugin_namespace": t.dt_string},
    )
    def plugin(value, spatial_shapes, level_start, loc, weights, **attrs):
        assert spatial_shapes.dtype.name == "int32" and level_start.dtype.name == "int32"
        calls.append(attrs["plugin_version"])
        v = torch.from_numpy(value)
        out = torch.ops.ddetr.ms_deform_attn(
            v,
            torch.from_numpy(spatial_shapes).long(),
            torch.from_numpy(level_start).long(),
            torch.from_numpy(loc),
            torch.from_numpy(weights),
            64,
        )
        return out.view(v.shape[0], loc.shape[1], v.shape[2], v.shape[3]).numpy()  # (N, Lq, M, D)

    proto = onnx.load(path)
    for n in proto.graph.node:
        if n.op_type == TRT_OP:
            n.domain = ext.default_opset_domain()
    proto.opset_import.append(onnx.helper.make_opsetid(ext.default_opset_domain(), 1))
    options = ort.SessionOptions()
    options.register_custom_ops_library(ext.get_library_path())
    return proto.SerializeToString(), options


def test_matches_eager_through_python_plugin(exported):
    model, path = exported
    proto, options = _with_python_plugin(path)
    session = ort.InferenceSession(proto, options, providers=["CPUExecutionProvider"])
    calls.clear()
    for batch, h, w in SIZES:
        images, mask, sizes = inputs(batch, h, w)
        got = session.run(None, {"images": images.numpy(), "mask": mask.numpy()})
        assert_matches(got, reference(model, images, mask, sizes)[:2])
    assert calls == [TRT_PLUGIN_VERSION] * (len(SIZES) * (TINY_MODEL["enc_layers"] + TINY_MODEL["dec_layers"]))
