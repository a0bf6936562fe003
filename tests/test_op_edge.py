"""Valid edge cases of the op: empty sizes, 1x1 levels, far and non-finite locations,
thread counts, instruction sets, half types, double backward."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ddetr.ops import ms_deform_attn_pytorch
from op_cases import BAND_CASES, BAND_SHAPES, SPREAD_CASES, SPREAD_SHAPES, encoder_inputs, make_inputs

op = torch.ops.ddetr.ms_deform_attn
op_backward = torch.ops.ddetr.ms_deform_attn_backward


@pytest.mark.parametrize("n,lq", [(0, 5), (2, 0), (0, 0)])
def test_empty_batch_or_queries(n, lq):
    value, shapes, start, loc, attn = make_inputs([[3, 4], [1, 2]], n, lq, 2, 5, 2, requires_grad=True)
    out = op(value, shapes, start, loc, attn, 64)
    assert out.shape == (n, lq, 10)
    out.sum().backward()
    assert value.grad.shape == value.shape and not value.grad.any()
    assert loc.grad.shape == loc.shape and attn.grad.shape == attn.shape


def test_far_outside_contributes_zero():
    value, shapes, start, loc, attn = make_inputs([[4, 4], [2, 2]], 2, 6, 2, 3, 2, requires_grad=True)
    with torch.no_grad():
        loc[..., 0] = torch.where(torch.rand(loc.shape[:-1]) < 0.5, -5.0, 1e30)
    out = op(value, shapes, start, loc, attn, 64)
    assert not out.any()
    out.sum().backward()
    assert not value.grad.any() and not loc.grad.any() and not attn.grad.any()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_locations_contribute_zero(bad):
    value, shapes, start, loc, attn = make_inputs([[5, 4], [2, 3]], 2, 6, 2, 3, 2)
    loc_bad = loc.clone()
    loc_bad[0, 1, 0, 0, 0, 1] = bad  # one point of one query
    out = op(value, shapes, start, loc_bad, attn, 64)
    # the same as if that point's weight were zero
    attn_zero = attn.clone()
    attn_zero[0, 1, 0, 0, 0] = 0
    torch.testing.assert_close(out, op(value, shapes, start, loc, attn_zero, 64))
    gv, gl, ga = op_backward(torch.ones_like(out), value, shapes, start, loc_bad, attn, 64)
    assert torch.isfinite(gv).all() and torch.isfinite(gl).all() and torch.isfinite(ga).all()
    assert gl[0, 1, 0, 0, 0].tolist() == [0.0, 0.0] and ga[0, 1, 0, 0, 0] == 0


def test_infinite_value_outside_the_map_stays_out():
    # zero padding must not turn into NaN when a neighbouring row holds inf
    value, shapes, start, loc, attn = make_inputs([[1, 2]], 1, 1, 1, 2, 1)
    value[0, 1] = float("inf")
    loc[...] = torch.tensor([0.1, 0.5], dtype=torch.float64)  # left half: column 1 unused
    out = op(value, shapes, start, loc, attn, 64)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ms_deform_attn_pytorch(value, shapes, loc, attn))


@pytest.mark.parametrize(
    "layout", ["decoder", "encoder", "bands-near", "bands-anywhere", "spread-24px", "spread-uniform"]
)
def test_thread_counts_bitwise_equal(layout):
    if layout.startswith("bands"):  # encoder layout on maps wide enough to walk in bands
        inputs = encoder_inputs(BAND_SHAPES, 2, 4, 32, 4, **BAND_CASES[layout[6:]], dtype=torch.float32)
    elif layout.startswith("spread"):  # points far from their queries: long sums per row
        inputs = encoder_inputs(SPREAD_SHAPES, 1, 4, 32, 4, **SPREAD_CASES[layout[7:]], dtype=torch.float32)
    else:  # 464 = S: the encoder layout, walked in strips
        lq = 464 if layout == "encoder" else 50
        inputs = make_inputs([[20, 17], [10, 9], [5, 5], [3, 3]], 2, lq, 4, 32, 4, dtype=torch.float32, seed=8)
    out = op(*inputs, 64)
    grad = torch.randn(out.shape)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append((op(*inputs, 64), *op_backward(grad, *inputs, 64)))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_head_sweeps_bitwise_equal(tmp_path):
    # The CPU kernels walk a query's heads together or one at a time (query_plan.h's
    # heads_per_sweep, chosen from the points); either walk must give the same bits, in both
    # passes and both ops. DDETR_CPU_HEADS forces each; the default picks by itself.
    code = textwrap.dedent("""
        import sys, torch, ddetr
        sys.path.insert(0, "tests")
        from op_cases import BAND_CASES, BAND_SHAPES, SPREAD_CASES, SPREAD_SHAPES, encoder_inputs, make_inputs
        from op_v2_cases import make_v2_inputs
        op, back = torch.ops.ddetr.ms_deform_attn, torch.ops.ddetr.ms_deform_attn_backward
        cases = [
            make_inputs([[20, 17], [10, 9], [5, 5], [3, 3]], 2, 50, 4, 32, 4, dtype=torch.float32, seed=8),
            encoder_inputs(BAND_SHAPES, 2, 4, 32, 4, **BAND_CASES["near"], dtype=torch.float32),
            encoder_inputs(SPREAD_SHAPES, 1, 4, 20, 4, **SPREAD_CASES["uniform"], dtype=torch.float64),
        ]
        results = []
        for inputs in cases:
            out = op(*inputs, 64)
            results += [out, *back(torch.randn(out.shape, generator=torch.Generator().manual_seed(1),
                                               dtype=out.dtype), *inputs, 64)]
        for method in ("default", "discrete"):
            v, shapes, loc, attn = make_v2_inputs([3, 6, 3], m=4, d=32, dtype=torch.float32, seed=4,
                                                  requires_grad=True)
            out = ddetr.ms_deform_attn_v2(v, shapes, loc, attn, [3, 6, 3], method)
            results += [out, *torch.autograd.grad(out.square().sum(), (v, attn))]
        torch.save(results, sys.argv[1])
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = {}
    for heads in ("auto", "1", "all"):
        env = {k: v for k, v in os.environ.items() if k != "DDETR_CPU_HEADS"}
        if heads != "auto":
            env["DDETR_CPU_HEADS"] = heads
        path = tmp_path / f"{heads}.pt"
        res = subprocess.run(
            [sys.executable, "-c", code, str(path)], env=env, cwd=root, capture_output=True, text=True, timeout=300
        )
        assert res.returncode == 0, res.stderr
        results[heads] = torch.load(path)
    for heads in ("1", "all"):
        for i, (a, b) in enumerate(zip(results["auto"], results[heads])):
            assert torch.equal(a, b), f"result {i} differs with DDETR_CPU_HEADS={heads}"


@pytest.mark.parametrize("isa,index64", [("baseline", False), ("avx2", False), ("avx512", False), ("avx512", True)])
def test_each_instruction_set(isa, index64):
    # each instruction-set copy of the CPU kernels against the float64 reference, in a fresh
    # process: both dtypes and the unrolled channel counts (32, 64), whose vector widths
    # (2 to 16 lanes) differ per copy, plus a generic one, with points on every border; in
    # the decoder layout and the encoder layout (walked in bands, some points far away)
    code = textwrap.dedent("""
        import sys, torch, ddetr
        sys.path.insert(0, "tests")
        from op_cases import BAND_SHAPES, encoder_inputs, make_inputs
        torch.manual_seed(0)
        from ddetr.ops import ms_deform_attn_pytorch as ref
        print(ddetr.build_info()["cpu_kernel_isa"])
        for dt, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
            for d, layout in [(d, x) for d in (32, 64, 20) for x in ("decoder", "encoder")]:
                if layout == "encoder":
                    v, s, st, l, a = encoder_inputs(BAND_SHAPES, 1, 2, d, 2, far=0.3,
                                                    requires_grad=True)
                else:
                    v, s, st, l, a = make_inputs([[9, 7], [4, 4], [1, 1]], 2, 7, 3, d, 3,
                                                 requires_grad=True)
                h = [t.detach().to(dt).requires_grad_() for t in (v, l, a)]
                o = torch.ops.ddetr.ms_deform_attn(h[0], s, st, h[1], h[2], 64)
                w = ref(v, s, l, a)
                torch.testing.assert_close(o.double(), w, rtol=tol, atol=tol)
                g = torch.randn_like(w)
                got = torch.autograd.grad(o, h, g.to(dt))
                want = torch.autograd.grad(w, (v, l, a), g)
                for x, y in zip(got, want):
                    # location gradients scale with the map width: compare relative to size
                    scale = max(1.0, y.abs().max().item())
                    torch.testing.assert_close(x.double() / scale, y / scale, rtol=tol,
                                               atol=tol * 10)
    """)
    env = dict(os.environ, DDETR_CPU_ISA=isa)
    env.pop("DDETR_CPU_INDEX64", None)
    if index64:  # int64 row indices, otherwise used only when S >= 2^30
        env["DDETR_CPU_INDEX64"] = "1"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    ran = res.stdout.strip()
    if ran != isa:  # a CPU without the instruction set falls back to a lesser copy
        fallbacks = {"avx512": ("avx2", "baseline"), "avx2": ("baseline",)}
        assert ran in fallbacks.get(isa, ()), ran
        pytest.skip(f"this CPU lacks {isa}: the {ran} copy ran instead (and passed)")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_types_on_cpu(dtype):
    value, shapes, start, loc, attn = make_inputs(
        [[6, 5], [3, 3]], 2, 8, 2, 16, 3, dtype=torch.float32, requires_grad=True
    )
    half = [t.detach().to(dtype).requires_grad_() for t in (value, loc, attn)]
    out = op(half[0], shapes, start, half[1], half[2], 64)
    assert out.dtype == dtype
    # the same computation on the rounded inputs in float64
    want = ms_deform_attn_pytorch(*(t.double() for t in (half[0], shapes)), half[1].double(), half[2].double())
    torch.testing.assert_close(out.double(), want, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == dtype for t in half)


def test_double_backward_raises_clearly():
    value, shapes, start, loc, attn = make_inputs([[3, 3]], 1, 2, 1, 2, 2, requires_grad=True)
    out = op(value, shapes, start, loc, attn, 64)
    (g,) = torch.autograd.grad(out.sum(), value, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


def test_import_refuses_torch_before_stable_abi():
    code = "import torch; torch.__version__ = '2.9.1'; import ddetr"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "needs torch >= 2.10" in res.stderr and "2.9.1" in res.stderr


def test_import_accepts_later_torch():
    # One build serves every torch from 2.10 on: no check ties it to the torch that built it.
    code = "import torch; torch.__version__ = '2.99.0'; import ddetr; print(ddetr.build_info()['torch_target'])"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "2.10"


def test_build_info():
    import ddetr

    info = ddetr.build_info()
    assert info["torch_target"] == "2.10"
    assert info["cpu_kernel_isa"] in ("baseline", "avx2", "avx512")
    assert "OpenMP" in info["parallel"] or "native" in info["parallel"]
    assert info["cuda"] == bool(info["cuda_archs"]) == bool(info["cuda_version"])


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_one_openmp_runtime():
    # the op threads on torch's OpenMP runtime, never on a second copy with its own pool
    import ddetr  # noqa: F401

    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if line.rstrip().endswith(".so") or ".so." in line}
    runtimes = {p for p in paths if os.path.basename(p).startswith(("libgomp", "libiomp", "libomp"))}
    assert len(runtimes) <= 1, runtimes
