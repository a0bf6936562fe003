"""torch.export of the detector with dynamic batch and image size, and its AOTInductor
package run in a fresh process that loads only torch and the op library (no ddetr code)."""

import json
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


@pytest.mark.slow  # the AOTInductor C++ compile: minutes on a CPU
def test_aoti_package_runs_without_ddetr(program, tmp_path):
    model, ep = program
    package = to_aoti(ep, str(tmp_path / "model.pt2"))
    data = [inputs(*size) for size in SIZES]
    torch.save(data, tmp_path / "inputs.pt")
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, op_library_path(), package, str(tmp_path / "inputs.pt")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for got, args in zip(json.loads(proc.stdout), data):
        ref = reference(model, *args)
        assert_matches([torch.tensor(g, dtype=r.dtype) for g, r in zip(got, ref)], ref)
