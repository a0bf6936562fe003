"""The CUDA kernels against the CPU kernels (float64) on the same inputs: forward and the
three gradients in every dtype, layouts, edge cases, the deterministic backward, 64-bit
indexing, CUDA graphs and torch.compile. Skipped where no CUDA device is present."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ddetr
from ddetr.ops import compute_level_start_index
from op_cases import CASES, case_id, make_inputs

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

op = torch.ops.ddetr.ms_deform_attn
op_backward = torch.ops.ddetr.ms_deform_attn_backward

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Relative to the largest reference magnitude (location gradients scale with the map size).
TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}
NAMES = ("output", "grad value", "grad sampling_locations", "grad attention_weights")


def dtype_id(dtype):
    return str(dtype).removeprefix("torch.")


def assert_scaled_close(got, want, dtype, what):
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    finite = want[want.isfinite()]
    scale = max(1.0, finite.abs().max().item()) if finite.numel() else 1.0
    tol = TOL[dtype]
    torch.testing.assert_close(
        got / scale, want / scale, rtol=tol, atol=tol, equal_nan=True, msg=lambda m: f"{what} ({dtype}): {m}"
    )


def to_cuda(inputs, dtype, device="cuda"):
    """Inputs on the GPU in `dtype` (index tensors stay where they are unless moved)."""
    value, shapes, start, loc, attn = inputs
    return (value.to(device, dtype), shapes.to(device), start.to(device), loc.to(device, dtype), attn.to(device, dtype))


def run(inputs, grad):
    """Output and the three gradients through the op and its autograd registration."""
    value, shapes, start, loc, attn = inputs
    v, lc, a = (t.detach().requires_grad_() for t in (value, loc, attn))
    out = op(v, shapes, start, lc, a, 64)
    grads = torch.autograd.grad(out, (v, lc, a), grad.to(out.device, out.dtype))
    return (out.detach(), *grads)


def cpu_reference(inputs, grad):
    """The CPU op in float64 on exactly the values the GPU sees (already rounded)."""
    value, shapes, start, loc, attn = inputs
    cpu = tuple(t.detach().cpu().double() for t in (value, loc, attn))
    return run((cpu[0], shapes.cpu(), start.cpu(), cpu[1], cpu[2]), grad.cpu().double())


def random_grad(inputs, seed=1):
    value, _, _, loc, _ = inputs
    n, lq = loc.shape[:2]
    m, d = value.shape[2:]
    return torch.randn(n, lq, m * d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def compare_to_cpu(inputs, dtype, grad_seed=1):
    grad = random_grad(inputs, grad_seed)
    got = run(inputs, grad)
    want = cpu_reference(inputs, grad)
    for name, g, w in zip(NAMES, got, want):
        assert g.device == inputs[0].device and g.dtype == dtype, name
        assert_scaled_close(g, w, dtype, name)
    return got


@pytest.fixture
def deterministic():
    was, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


def test_built_with_cuda():
    assert ddetr.build_info()["cuda"], "a CUDA device is present but ddetr was built without its CUDA kernels"


# -------------------------------------------------------------------------- values
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_cpu(case, dtype):
    shapes, n, lq, m, d, p = case
    compare_to_cpu(to_cuda(make_inputs(shapes, n, lq, m, d, p), dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("d", [1, 3, 71, 257, 32, 64, 8])
def test_channel_counts(d, dtype):
    # Odd D runs one channel per lane; D > 32 * vector width takes several passes.
    inputs = make_inputs([[6, 5], [3, 3], [1, 1]], n=2, lq=6, m=3, d=d, p=4, seed=d)
    compare_to_cpu(to_cuda(inputs, dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_non_contiguous_inputs(dtype):
    value, shapes, start, loc, attn = to_cuda(make_inputs([[7, 5], [4, 3]], n=2, lq=6, m=4, d=16, p=3), dtype)
    # Same values, other layouts: transposed storage and strided slices.
    value_nc = value.transpose(1, 2).contiguous().transpose(1, 2)
    loc_nc = torch.stack((loc, loc), dim=-1)[..., 0]
    attn_nc = attn.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (value_nc.is_contiguous() or loc_nc.is_contiguous() or attn_nc.is_contiguous())
    assert torch.equal(loc_nc, loc)
    compare_to_cpu((value_nc, shapes, start, loc_nc, attn_nc), dtype)
    # grad_output non-contiguous through the backward op directly.
    grad = random_grad((value, shapes, start, loc, attn)).to("cuda", dtype)
    grad_nc = grad.transpose(1, 2).contiguous().transpose(1, 2)
    assert not grad_nc.is_contiguous()
    got = op_backward(grad_nc, value_nc, shapes, start, loc_nc, attn_nc, 64)
    want = op_backward(grad.contiguous(), value, shapes, start, loc, attn, 64)
    for name, g, w in zip(NAMES[1:], got, want):
        assert_scaled_close(g, w, dtype, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=dtype_id)
@pytest.mark.parametrize("shift", [1, 2, 3])
def test_unaligned_storage(shift, dtype):
    # Contiguous tensors whose data starts off a 16-byte boundary: narrower vector loads.
    value, shapes, start, loc, attn = to_cuda(make_inputs([[5, 6], [2, 3]], d=32), dtype)
    flat = torch.zeros(value.numel() + shift, device="cuda", dtype=dtype)
    flat[shift:] = value.flatten()
    shifted = flat[shift:].view(value.shape)
    assert shifted.is_contiguous() and shifted.data_ptr() % 16 != 0
    compare_to_cpu((shifted, shapes, start, loc, attn), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_locations_outside_and_non_finite(dtype):
    value, shapes, start, loc, attn = to_cuda(
        make_inputs([[6, 4], [3, 2], [1, 1]], n=2, lq=8, m=2, d=8, p=4, spread=(-2.0, 3.0)), dtype
    )
    flat = loc.view(-1)
    specials = torch.tensor(
        [float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 0.0, 1.0], device="cuda", dtype=dtype
    )
    flat[: 7 * 9 : 9] = specials
    flat[1 : 7 * 13 : 13] = specials
    got = compare_to_cpu((value, shapes, start, loc, attn), dtype)
    for name, t in zip(NAMES, got):
        assert t.isfinite().all(), f"{name} has non-finite entries"


def test_one_by_one_levels():
    inputs = make_inputs([[1, 1], [1, 1], [1, 1]], n=3, lq=4, m=2, d=32, p=4)
    compare_to_cpu(to_cuda(inputs, torch.float32), torch.float32)


def test_batch_97():
    inputs = make_inputs([[6, 4], [3, 2]], n=97, lq=5, m=2, d=32, p=3)
    compare_to_cpu(to_cuda(inputs, torch.float32), torch.float32)


@pytest.mark.parametrize("n, lq", [(0, 5), (2, 0), (0, 0)])
def test_empty(n, lq):
    value, shapes, start, loc, attn = to_cuda(make_inputs([[4, 3], [2, 2]], n=n, lq=lq, m=2, d=8, p=3), torch.float32)
    out = op(value, shapes, start, loc, attn, 64)
    assert out.shape == (n, lq, 16) and out.device == value.device
    grad = torch.randn(out.shape, device="cuda")
    gv, gl, ga = op_backward(grad, value, shapes, start, loc, attn, 64)
    assert gv.shape == value.shape and gl.shape == loc.shape and ga.shape == attn.shape
    assert (gv == 0).all()
    torch.cuda.synchronize()


# ---------------------------------------------------------------- index tensors, devices
def test_spatial_shapes_on_cpu_or_gpu():
    value, shapes, start, loc, attn = to_cuda(make_inputs([[7, 6], [3, 4], [1, 2]], d=16), torch.float32)
    grad = random_grad((value, shapes, start, loc, attn))
    on_gpu = run((value, shapes, start, loc, attn), grad)
    on_cpu = run((value, shapes.cpu(), start.cpu(), loc, attn), grad)
    mixed = run((value, shapes.cpu(), start, loc, attn), grad)
    assert torch.equal(on_gpu[0], on_cpu[0]) and torch.equal(on_gpu[0], mixed[0])
    for name, a, b in zip(NAMES[1:], on_gpu[1:], on_cpu[1:]):
        assert_scaled_close(a, b, torch.float32, name)
    # int32 index tensors are accepted and widened.
    out32 = op(value, shapes.int(), start.int(), loc, attn, 64)
    assert torch.equal(out32, on_gpu[0])


def test_mixed_devices_rejected():
    value, shapes, start, loc, attn = to_cuda(make_inputs([[4, 4]]), torch.float32)
    with pytest.raises(RuntimeError, match="one device"):
        op(value, shapes, start, loc.cpu(), attn, 64)
    with pytest.raises(RuntimeError, match="CUDA device|one device"):
        op(value.cpu(), shapes, start, loc, attn, 64)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device():
    inputs = to_cuda(make_inputs([[5, 4], [2, 2]], d=8), torch.float32, device="cuda:1")
    got = compare_to_cpu(inputs, torch.float32)
    assert all(t.device == torch.device("cuda:1") for t in got)


# ------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("spread", [(-0.1, 1.1), (0.45, 0.55)], ids=["spread", "crowded"])
def test_deterministic_backward_is_bitwise_repeatable(spread, dtype, deterministic):
    # "crowded": every point lands in a few pixels, so many contributions share a row.
    inputs = to_cuda(make_inputs([[9, 7], [4, 4], [2, 3], [1, 1]], n=3, lq=40, m=4, d=32, p=4, spread=spread), dtype)
    grad = random_grad(inputs)
    first = run(inputs, grad)
    second = run(inputs, grad)
    for name, a, b in zip(NAMES, first, second):
        assert torch.equal(a, b), f"{name} differs between two deterministic runs"
    want = cpu_reference(inputs, grad)
    for name, g, w in zip(NAMES, first, want):
        assert_scaled_close(g, w, dtype, name)


@pytest.mark.parametrize("d", [1, 3, 71, 257])
def test_deterministic_backward_odd_channels(d, deterministic):
    inputs = to_cuda(make_inputs([[6, 5], [3, 3], [1, 1]], n=2, lq=7, m=2, d=d, p=3, seed=d), torch.float32)
    compare_to_cpu(inputs, torch.float32)


def test_deterministic_matches_default():
    inputs = to_cuda(make_inputs([[8, 8], [4, 4]], n=2, lq=20, m=2, d=32, p=4), torch.float32)
    grad = random_grad(inputs)
    default = run(inputs, grad)
    torch.use_deterministic_algorithms(True)
    try:
        det = run(inputs, grad)
    finally:
        torch.use_deterministic_algorithms(False)
    for name, a, b in zip(NAMES, default, det):
        assert_scaled_close(a, b, torch.float32, name)


# --------------------------------------------------------------------- 64-bit indexing
def free_gpu_bytes():
    free, _ = torch.cuda.mem_get_info()
    return free


@pytest.mark.slow
def test_large_output_and_grad_output():
    # Output and grad_output hold N*Lq*M*D = 2.28e9 > 2^31 elements (9.1 GB each).
    if free_gpu_bytes() < 24 * 2**30:
        pytest.skip("needs 24 GiB of free GPU memory")
    n, lq, m, d = 1, 2**20, 8, 272
    shapes = torch.tensor([[4, 4]], device="cuda")
    start = compute_level_start_index(shapes)
    gen = torch.Generator(device="cuda").manual_seed(0)
    value = torch.randn(n, 16, m, d, device="cuda", generator=gen)
    loc = torch.rand(n, lq, m, 1, 2, 2, device="cuda", generator=gen)
    attn = torch.rand(n, lq, m, 1, 2, device="cuda", generator=gen)
    out = op(value, shapes, start, loc, attn, 64)
    grad = torch.randn(out.shape, device="cuda", generator=gen)
    gv, gl, ga = op_backward(grad, value, shapes, start, loc, attn, 64)
    # Queries are independent: check the first and the last ones (offsets past 2^31).
    for q in (slice(0, 64), slice(lq - 256, lq)):
        sub = (value, shapes, start, loc[:, q], attn[:, q])
        want_out = op(*(t.cpu().double() if t.is_floating_point() else t.cpu() for t in sub), 64)
        assert_scaled_close(out[:, q], want_out, torch.float32, "output")
        want = op_backward(
            grad[:, q].cpu().double(), *(t.cpu().double() if t.is_floating_point() else t.cpu() for t in sub), 64
        )
        assert_scaled_close(gl[:, q], want[1], torch.float32, "grad sampling_locations")
        assert_scaled_close(ga[:, q], want[2], torch.float32, "grad attention_weights")
    assert gv.isfinite().all()


@pytest.mark.slow
@pytest.mark.parametrize("det", [False, True], ids=["default", "deterministic"])
def test_large_value(det):
    # value and grad_value hold S*D = 2.28e9 > 2^31 elements; every point samples the last
    # two rows of the map, which a 2 x W crop reproduces exactly (power-of-two sizes and
    # pixel coordinates on quarter pixels keep the arithmetic exact).
    if free_gpu_bytes() < 32 * 2**30:
        pytest.skip("needs 32 GiB of free GPU memory")
    H, W, d, lq, p = 4096, 2048, 272, 64, 4
    S = H * W
    gen = torch.Generator(device="cuda").manual_seed(0)
    value = torch.randn(1, S, 1, d, device="cuda", generator=gen)
    shapes = torch.tensor([[H, W]], device="cuda")
    start = torch.zeros(1, dtype=torch.int64, device="cuda")
    px = torch.randint(0, W - 1, (1, lq, 1, 1, p), device="cuda", generator=gen) + 0.25 * torch.randint(
        0, 4, (1, lq, 1, 1, p), device="cuda", generator=gen
    )
    py = (H - 2) + 0.25 * torch.randint(0, 4, (1, lq, 1, 1, p), device="cuda", generator=gen)
    loc = torch.stack(((px + 0.5) / W, (py + 0.5) / H), dim=-1).float()
    attn = torch.rand(1, lq, 1, 1, p, device="cuda", generator=gen)
    grad = torch.randn(1, lq, d, device="cuda", generator=gen)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(det)
    try:
        out = op(value, shapes, start, loc, attn, 64)
        gv, gl, ga = op_backward(grad, value, shapes, start, loc, attn, 64, det)
    finally:
        torch.use_deterministic_algorithms(was)

    crop = value[:, S - 2 * W :].cpu().double()
    loc_c = loc.cpu().double().clone()
    loc_c[..., 1] = (py.cpu().double() - (H - 2) + 0.5) / 2
    shapes_c, start_c = torch.tensor([[2, W]]), torch.zeros(1, dtype=torch.int64)
    attn_c, grad_c = attn.cpu().double(), grad.cpu().double()
    assert_scaled_close(out, op(crop, shapes_c, start_c, loc_c, attn_c, 64), torch.float32, "output")
    gv_c, gl_c, ga_c = op_backward(grad_c, crop, shapes_c, start_c, loc_c, attn_c, 64)
    assert_scaled_close(gv[:, S - 2 * W :], gv_c, torch.float32, "grad value (last rows)")
    assert (gv[:, : S - 2 * W] == 0).all().item()
    gl_c[..., 1] *= H / 2  # d/dy on the full map = d/dy' * dy'/dy
    assert_scaled_close(gl, gl_c, torch.float32, "grad sampling_locations")
    assert_scaled_close(ga, ga_c, torch.float32, "grad attention_weights")


# ------------------------------------------------------------ CUDA graphs, torch.compile
def test_cuda_graph_capture_and_replay():
    shape_args = dict(shapes=[[6, 5], [3, 3]], n=2, lq=6, m=2, d=32, p=4)
    value, shapes, start, loc, attn = to_cuda(make_inputs(**shape_args), torch.float32)
    grad = random_grad((value, shapes, start, loc, attn)).cuda().float()
    static = [t.clone() for t in (value, loc, attn, grad)]

    def step():
        v, lc, a, g = static
        return (op(v, shapes, start, lc, a, 64), *op_backward(g, v, shapes, start, lc, a, 64))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()

    for seed in (1, 2):
        new = to_cuda(make_inputs(**shape_args, seed=seed), torch.float32)
        new_grad = random_grad(new, seed + 10).cuda().float()
        for dst, src in zip(static, (new[0], new[3], new[4], new_grad)):
            dst.copy_(src)
        graph.replay()
        torch.cuda.synchronize()
        want = (
            op(new[0], shapes, start, new[3], new[4], 64),
            *op_backward(new_grad, new[0], shapes, start, new[3], new[4], 64),
        )
        assert torch.equal(captured[0], want[0])
        for name, a, b in zip(NAMES, captured, want):
            assert_scaled_close(a, b, torch.float32, name)


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    inputs = to_cuda(make_inputs([[6, 5], [3, 3], [1, 1]], n=2, lq=7, m=2, d=32, p=4), torch.float32)

    def loss(value, shapes, start, loc, attn):
        out = ddetr.ops.ms_deform_attn(value, shapes, loc, attn, level_start_index=start)
        return (out * out).sum()

    compiled = torch.compile(loss, fullgraph=True)
    results = []
    for fn in (loss, compiled):
        value, shapes, start, loc, attn = inputs
        v, lc, a = (t.detach().requires_grad_() for t in (value, loc, attn))
        y = fn(v, shapes, start, lc, a)
        results.append((y.detach(), *torch.autograd.grad(y, (v, lc, a))))
    for name, a, b in zip(("loss", *NAMES[1:]), *results):
        assert_scaled_close(a, b, torch.float32, name)


class TinyDeformableAttention(nn.Module):
    """A minimal module around the op: value projection, offsets and weights from queries."""

    def __init__(self, shapes, m=2, d=16, p=4):
        super().__init__()
        self.register_buffer("shapes", torch.tensor(shapes))
        self.register_buffer("start", compute_level_start_index(self.shapes))
        self.m, self.d, self.lc, self.p = m, d, len(shapes), p
        c = m * d
        self.value_proj = nn.Linear(c, c)
        self.offsets = nn.Linear(c, m * self.lc * p * 2)
        self.weights = nn.Linear(c, m * self.lc * p)

    def forward(self, query, reference, src):
        n, lq, _ = query.shape
        m, d, lc, p = self.m, self.d, self.lc, self.p
        value = self.value_proj(src).view(n, src.shape[1], m, d)
        offsets = self.offsets(query).view(n, lq, m, lc, p, 2).tanh() * 0.2
        loc = reference[:, :, None, None, None, :] + offsets
        attn = self.weights(query).view(n, lq, m, lc * p).softmax(-1).view(n, lq, m, lc, p)
        return ddetr.ops.ms_deform_attn(value, self.shapes, loc, attn, level_start_index=self.start)


def test_torch_compile_reduce_overhead():
    torch._dynamo.reset()
    shapes = [[8, 6], [4, 3], [2, 2]]
    s = sum(h * w for h, w in shapes)
    torch.manual_seed(0)
    module = TinyDeformableAttention(shapes).cuda()
    compiled = torch.compile(module, mode="reduce-overhead", fullgraph=True)

    def batch(seed):
        g = torch.Generator(device="cuda").manual_seed(seed)
        return (
            torch.randn(2, 10, 32, device="cuda", generator=g),
            torch.rand(2, 10, 2, device="cuda", generator=g),
            torch.randn(2, s, 32, device="cuda", generator=g),
        )

    with torch.no_grad():  # inference: recorded after warm-up, then replayed
        for seed in range(4):
            inputs = batch(seed)
            got = compiled(*inputs).clone()
            assert_scaled_close(got, module(*inputs), torch.float32, f"output, call {seed}")

    for seed in range(4):  # training: forward and backward graphs
        torch.compiler.cudagraph_mark_step_begin()
        query, reference, src = batch(10 + seed)
        q1, s1 = query.clone().requires_grad_(), src.clone().requires_grad_()
        q2, s2 = query.clone().requires_grad_(), src.clone().requires_grad_()
        out = compiled(q1, reference, s1)
        out.square().sum().backward()
        want = module(q2, reference, s2)
        want.square().sum().backward()
        assert_scaled_close(out.detach(), want.detach(), torch.float32, f"output, step {seed}")
        assert_scaled_close(q1.grad, q2.grad, torch.float32, f"grad query, step {seed}")
        assert_scaled_close(s1.grad, s2.grad, torch.float32, f"grad src, step {seed}")
        module.zero_grad(set_to_none=True)
