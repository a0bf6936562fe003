"""torch.export of the detector with dynamic batch and image size, and its AOTInductor
package run in a fresh process that loads only torch and the op library (no ddetr code)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from ddetr.export import (
    ExportError,
    export_program,
    op_library_path,
    size_limits,
    to_aoti,
)
from ddetr.nn import MSDeformAttn
from ddetr.ops import compute_level_start_index
from export_cases import NUM_SELECT, SIZES, assert_matches, inputs, reference, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def program():
    model = tiny_model("two-stage")
    return model, export_program(model, image_size=(128, 160), postprocess=True, num_select=NUM_SELECT)


def test_dynamic_sizes(program):
    model, ep = program
    low, _ = size_limits(model)
    ranges = {str(k): (int(v.lower), v.upper) for k, v in ep.range_constraints.items()}
    assert sum(lo == low for lo, _ in ranges.values()) == 2, f"height and width from {low}: {ranges}"
    run = ep.module()
    for batch, h, w in SIZES:
        args = inputs(batch, h, w)
        with torch.no_grad():
            assert_matches(run(*args), reference(model, *args), rtol=1e-5)
    assert any(n.target is torch.ops.ddetr.ms_deform_attn.default for n in ep.graph.nodes)


def test_image_size_below_minimum_is_refused():
    model = tiny_model("two-stage")
    low, _ = size_limits(model)
    with pytest.raises(ExportError, match=f"below this model's minimum side {low}"):
        export_program(model, image_size=low - 1)


def test_what_optimize_for_inference_also_refuses():
    """The model checks export shares with optimize_for_inference, as ExportError."""
    from ddetr import optimize_for_inference

    model = tiny_model("default")
    with pytest.raises(ExportError, match=r"DeformableDETR, got OptimizedDETR \(export the model it was made from"):
        export_program(optimize_for_inference(model, compile=False))
    with pytest.raises(ExportError, match="training mode"):
        export_program(model.train())
    with pytest.raises(ExportError, match=r"float32 model, got \['torch.float64'\]: reduced precision"):
        export_program(model.eval().double())


_RUNNER = r"""
import json, sys, torch
torch.ops.load_library(sys.argv[1])
run = torch._inductor.aoti_load_package(sys.argv[2])
data = torch.load(sys.argv[3])
outs = [[o.tolist() for o in run(*args)] for args in data]
assert not any(m.startswith("ddetr") for m in sys.modules), "ddetr code was imported"
print(json.dumps(outs))
"""


def _run_package(package: str, data: list, tmp_path) -> list:
    """The package's outputs for each argument tuple of `data`, from a process that loads only
    torch and the op library."""
    torch.save(data, tmp_path / "inputs.pt")
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, op_library_path(), package, str(tmp_path / "inputs.pt")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


class _Attentions(torch.nn.Module):
    """Both ops in one graph: the 2020 form and the generalised one (points per level)."""

    def __init__(self):
        super().__init__()
        self.v1 = MSDeformAttn(32, n_levels=2, n_heads=4, n_points=2)
        self.v2 = MSDeformAttn(32, n_levels=2, n_heads=4, n_points=[1, 3])

    def forward(self, query, reference_points, value, spatial_shapes, level_start_index):
        out = self.v1(query, reference_points, value, spatial_shapes, level_start_index)
        return (self.v2(out, reference_points, value, spatial_shapes, level_start_index),)  # a list, as the detector's


def test_aoti_package_of_the_ops_runs_without_ddetr(tmp_path):
    # The package mechanics (the ops called through the dispatcher from a package that a
    # process without ddetr loads) on a graph small enough to compile in seconds.
    torch.manual_seed(0)
    model = _Attentions().eval()
    shapes = torch.tensor([[6, 8], [3, 4]])
    args = (
        torch.randn(2, 5, 32),
        torch.rand(2, 5, 2, 2),
        torch.randn(2, 60, 32),
        shapes,
        compute_level_start_index(shapes),
    )
    with torch.no_grad():
        ep = torch.export.export(model, args)
        (want,) = model(*args)
    assert {torch.ops.ddetr.ms_deform_attn.default, torch.ops.ddetr.ms_deform_attn_v2.default} <= {
        n.target for n in ep.graph.nodes
    }
    (got,) = _run_package(to_aoti(ep, str(tmp_path / "ops.pt2")), [args], tmp_path)
    torch.testing.assert_close(torch.tensor(got[0]), want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("DDETR_TEST_AOTI_DETECTOR"),
    reason="the detector's AOTInductor compile takes about 10 minutes on 2 CPU cores: "
    "DDETR_TEST_AOTI_DETECTOR=1 runs it",
)
def test_aoti_package_of_the_detector_runs_without_ddetr(program, tmp_path):
    model, ep = program
    data = [inputs(*size) for size in SIZES]
    for got, args in zip(_run_package(to_aoti(ep, str(tmp_path / "model.pt2")), data, tmp_path), data):
        ref = reference(model, *args)
        assert_matches([torch.tensor(g, dtype=r.dtype) for g, r in zip(got, ref)], ref)
