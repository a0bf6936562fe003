"""ms_deform_attn_v2's CUDA kernels against its CPU kernels (float64) on the same inputs: the
points lists, both methods, every dtype, both backward paths (default and deterministic),
non-contiguous inputs, CUDA graphs and torch.compile. Skipped where no CUDA device is present."""

from __future__ import annotations

import pytest
import torch

import ddetr
from op_v2_cases import METHODS, POINTS_LISTS, make_v2_inputs, op_args

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

op = torch.ops.ddetr.ms_deform_attn_v2
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Relative to the largest reference magnitude (location gradients scale with the map size).
TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}
LISTS = list(POINTS_LISTS.values())


def dtype_id(dtype):
    return str(dtype).removeprefix("torch.")


def assert_scaled_close(got, want, dtype, what):
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    scale = max(1.0, want.abs().max().item())
    tol = TOL[dtype]
    torch.testing.assert_close(got / scale, want / scale, rtol=tol, atol=tol, msg=lambda m: f"{what} ({dtype}): {m}")


def run(value, shapes, loc, attn, points, method, grad):
    """Output and the gradients (value, weights, and locations for "default")."""
    v, lc, a = (t.detach().requires_grad_() for t in (value, loc, attn))
    out = ddetr.ms_deform_attn_v2(v, shapes, lc, a, points, method)
    inputs = (v, a, lc) if method == "default" else (v, a)
    return (out.detach(), *torch.autograd.grad(out, inputs, grad.to(out.device, out.dtype)))


def inputs_on_gpu(points, dtype, seed=0, **kw):
    value, shapes, loc, attn = make_v2_inputs(points, seed=seed, **kw)
    loc_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    return value.cuda().to(dtype), shapes.cuda(), loc.cuda().to(loc_dtype), attn.cuda().to(dtype)


def compare_to_cpu(points, method, dtype, seed=0, **kw):
    value, shapes, loc, attn = inputs_on_gpu(points, dtype, seed, **kw)
    n, lq = loc.shape[:2]
    grad = torch.randn(n, lq, value.shape[2] * value.shape[3], dtype=torch.float64)
    got = run(value, shapes, loc, attn, points, method, grad)
    cpu = [t.cpu().double() for t in (value, loc, attn)]
    want = run(cpu[0], shapes.cpu(), cpu[1], cpu[2], points, method, grad)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.is_cuda
        assert_scaled_close(g, w, dtype, ("output", "grad value", "grad weights", "grad locations")[i])
    return got


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("points", LISTS, ids=list(POINTS_LISTS))
def test_matches_cpu(points, method, dtype):
    compare_to_cpu(points, method, dtype, d=8)


@pytest.mark.parametrize("d", [1, 3, 32, 71, 257])
@pytest.mark.parametrize("method", METHODS)
def test_channel_counts(d, method):
    compare_to_cpu([3, 6, 3], method, torch.float32, seed=1, d=d)


@pytest.mark.parametrize("method", METHODS)
def test_discrete_and_default_off_the_map_and_non_finite(method):
    value, shapes, loc, attn = inputs_on_gpu([1, 8], torch.float32, seed=2, spread=(-0.5, 1.5))
    loc[0, 0, 0, :3] = torch.tensor([[float("nan"), 0.5], [float("inf"), float("-inf")], [2.0, -3.0]], device="cuda")
    want = ddetr.ms_deform_attn_v2(value.cpu(), shapes.cpu(), loc.cpu(), attn.cpu(), [1, 8], method)
    got = ddetr.ms_deform_attn_v2(value, shapes, loc, attn, [1, 8], method)
    assert_scaled_close(got, want, torch.float32, "output")


def test_non_contiguous_inputs():
    value, shapes, loc, attn = inputs_on_gpu([3, 6, 3], torch.float32, seed=3)
    want = ddetr.ms_deform_attn_v2(value, shapes, loc, attn, [3, 6, 3], "discrete")
    v = value.transpose(1, 2).contiguous().transpose(1, 2)
    lc = loc.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (v.is_contiguous() or lc.is_contiguous())
    torch.testing.assert_close(ddetr.ms_deform_attn_v2(v, shapes, lc, attn, [3, 6, 3], "discrete"), want)


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_backward_is_bitwise_repeatable_and_matches(method):
    value, shapes, loc, attn = inputs_on_gpu([3, 6, 3], torch.float32, seed=4, n=2, lq=40, m=4, d=32)
    grad = torch.randn(2, 40, 128, dtype=torch.float64)
    default = run(value, shapes, loc, attn, [3, 6, 3], method, grad)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = run(value, shapes, loc, attn, [3, 6, 3], method, grad)
        second = run(value, shapes, loc, attn, [3, 6, 3], method, grad)
    finally:
        torch.use_deterministic_algorithms(was)
    for a, b, c in zip(first, second, default):
        assert torch.equal(a, b)
        assert_scaled_close(a, c, torch.float32, "deterministic against default")


def test_opcheck():
    value, shapes, loc, attn = inputs_on_gpu([3, 6, 3], torch.float32, seed=5, n=2, lq=3, m=2, d=4)
    for method in METHODS:
        torch.library.opcheck(op, op_args(value.requires_grad_(), shapes, loc, attn, [3, 6, 3], method))


def test_cuda_graph_capture_and_replay():
    value, shapes, loc, attn = inputs_on_gpu([3, 6, 3], torch.float32, seed=6)
    start = ddetr.ops.compute_level_start_index(shapes)
    want = op(value, shapes, start, loc, attn, [3, 6, 3], "discrete")
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        op(value, shapes, start, loc, attn, [3, 6, 3], "discrete")  # warm up outside the capture
        with torch.cuda.graph(graph, stream=stream):
            out = op(value, shapes, start, loc, attn, [3, 6, 3], "discrete")
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("method", METHODS)
def test_torch_compile_fullgraph(method):
    value, shapes, loc, attn = inputs_on_gpu([3, 6, 3], torch.float32, seed=7)
    shapes_list = [tuple(s) for s in shapes.tolist()]

    def f(v, lc, a):
        return ddetr.ms_deform_attn_v2(v, shapes_list, lc, a, [3, 6, 3], method)

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(value, loc, attn), f(value, loc, attn))


def test_autocast_bfloat16():
    value, shapes, loc, attn = inputs_on_gpu([3, 6, 3], torch.float32, seed=8)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        same = ddetr.ms_deform_attn_v2(value, shapes, loc, attn, [3, 6, 3])  # float32 stays
        out = ddetr.ms_deform_attn_v2(value.bfloat16(), shapes, loc, attn, [3, 6, 3])
    assert same.dtype == torch.float32
    assert torch.equal(same, ddetr.ms_deform_attn_v2(value, shapes, loc, attn, [3, 6, 3]))
    assert out.dtype == torch.bfloat16
    want = ddetr.ms_deform_attn_v2(value.bfloat16(), shapes, loc, attn.bfloat16(), [3, 6, 3])
    assert torch.equal(out, want)
