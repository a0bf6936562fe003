"""gradcheck, opcheck and torch.compile for the op (the checks the torchvision and
extension-cpp ops run)."""

import pytest
import torch

import ddetr
from ddetr.nn import MSDeformAttn
from op_cases import make_inputs

op = torch.ops.ddetr.ms_deform_attn

GRADCHECK_CASES = [
    ([[4, 3], [2, 2]], 2, 3, 2, 3, 2),
    ([[3, 5], [1, 1]], 1, 2, 1, 1, 3),
    ([[2, 2], [2, 1], [1, 1]], 1, 1, 3, 5, 1),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES)
def test_gradcheck_float64(case):
    shapes, n, lq, m, d, p = case
    value, s, st, loc, attn = make_inputs(shapes, n, lq, m, d, p, requires_grad=True, seed=11)
    assert torch.autograd.gradcheck(
        lambda v, lc, a: op(v, s, st, lc, a, 64), (value, loc, attn), eps=1e-6, atol=1e-5, rtol=1e-4
    )


def opcheck_inputs():
    for case in GRADCHECK_CASES[:2]:
        v, s, st, lc, a = make_inputs(*case, requires_grad=True, seed=12)
        yield (v, s, st, lc, a, 64)
    v, s, st, lc, a = make_inputs([[3, 3]], 2, 4, 2, 3, 2, dtype=torch.float32, seed=13)
    yield (v, s, st, lc, a, 2)
    # non-contiguous value
    v, s, st, lc, a = make_inputs([[3, 4]], 2, 3, 2, 5, 2, seed=14, requires_grad=True)
    yield (v.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(), s, st, lc, a, 64)
    # empty batch
    yield make_inputs([[2, 2]], 0, 3, 1, 2, 1, seed=15) + (64,)


@pytest.mark.parametrize("i,args", list(enumerate(opcheck_inputs())))
def test_opcheck(i, args):
    torch.library.opcheck(op, args)


def test_opcheck_backward_op():
    v, s, st, lc, a = make_inputs([[3, 4], [2, 2]], 2, 3, 2, 4, 2, seed=16)
    grad = torch.randn(2, 3, 8, dtype=torch.float64)
    torch.library.opcheck(torch.ops.ddetr.ms_deform_attn_backward, (grad, v, s, st, lc, a, 64))


def test_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    attn_mod = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=2).double()
    shapes = torch.tensor([[6, 5], [3, 3]])
    start = ddetr.ops.compute_level_start_index(shapes)
    s = int(shapes.prod(1).sum())
    query = torch.randn(2, 7, 32, dtype=torch.float64)
    ref_pts = torch.rand(2, 7, 2, 2, dtype=torch.float64)
    src = torch.randn(2, s, 32, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, s, dtype=torch.bool)
    mask[1, -4:] = True

    def run(fn):
        src_ = src.detach().clone().requires_grad_()
        attn_mod.zero_grad()
        out = fn(query, ref_pts, src_, shapes, start, mask)
        out.square().sum().backward()
        return out, [src_.grad] + [p.grad.clone() for p in attn_mod.parameters()]

    # aot_eager traces forward and backward through the fake kernels
    out_c, grads_c = run(torch.compile(attn_mod, fullgraph=True, backend="aot_eager"))
    out_e, grads_e = run(attn_mod)
    torch.testing.assert_close(out_c, out_e)
    for a, b in zip(grads_c, grads_e):
        torch.testing.assert_close(a, b)


def test_compile_inductor_forward_backward():
    v, s, st, lc, a = make_inputs([[5, 4], [2, 2]], 2, 6, 2, 8, 2, dtype=torch.float32, requires_grad=True, seed=17)

    def f(v, lc, a):
        return (op(v * 2, s, st, lc.clamp(-0.5, 1.5), a.softmax(-1), 64) ** 2).sum()

    got = torch.autograd.grad(torch.compile(f, fullgraph=True)(v, lc, a), (v, lc, a))
    want = torch.autograd.grad(f(v, lc, a), (v, lc, a))
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
