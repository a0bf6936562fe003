"""The portable ONNX translation of ms_deform_attn_v2 (GridSample per level for "default",
Gather at the clamped nearest pixel for "discrete"), run by onnxruntime against eager, at two
batch sizes and query counts from one file."""

import pytest
import torch

import ddetr
from op_v2_cases import METHODS, make_v2_inputs

onnx = pytest.importorskip("onnx", reason="the export extra is not installed: pip install 'ddetr[export]'")
pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install 'ddetr[export]'")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'ddetr[export]'")

from ddetr.export._onnx import _translation  # noqa: E402  (after the skips: it needs them)

SHAPES = [(6, 5), (3, 4), (2, 2)]


class Attention(torch.nn.Module):
    def __init__(self, points, method):
        super().__init__()
        self.points, self.method = points, method
        self.register_buffer("shapes", torch.tensor(SHAPES, dtype=torch.int64))

    def forward(self, value, loc, attn):
        return ddetr.ms_deform_attn_v2(value, self.shapes, loc, attn, self.points, self.method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("points", [[3, 6, 3], [4, 4, 4]], ids=str)
def test_onnxruntime_matches_eager(points, method, tmp_path):
    model = Attention(points, method)
    value, _, loc, attn = make_v2_inputs(points, n=2, lq=7, m=2, d=4, dtype=torch.float32, seed=40)
    batch, queries = torch.export.Dim("batch"), torch.export.Dim("queries")
    path = str(tmp_path / "v2.onnx")
    torch.onnx.export(
        model,
        (value, loc, attn),
        path,
        dynamo=True,
        input_names=["value", "loc", "attn"],
        dynamic_shapes=({0: batch}, {0: batch, 1: queries}, {0: batch, 1: queries}),
        custom_translation_table=_translation("portable"),
        optimize=False,
    )
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("GridSample") == (3 if method == "default" else 0)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for n, lq, seed in ((2, 7, 41), (3, 11, 42)):
        value, _, loc, attn = make_v2_inputs(points, n=n, lq=lq, m=2, d=4, dtype=torch.float32, seed=seed)
        if method == "discrete":  # on pixel edges and past the borders too
            loc[..., :4, :] = torch.tensor([[0.5 / 5, 1.5 / 6], [-0.3, 1.2], [1.0, 0.0], [0.7, 2.0]])
        (got,) = session.run(None, {"value": value.numpy(), "loc": loc.numpy(), "attn": attn.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), model(value, loc, attn), rtol=1e-5, atol=1e-5)
