"""The op's precision policy: attention weights in the value's dtype; locations too, or float32
beside a float16 / bfloat16 value (never rounded to 16 bits); float32 accumulation; every other
mix refused; autocast on the CPU (and CUDA, when present) casts accordingly. Each accepted
combination is checked against the float64 reference evaluated at the very inputs the op got,
so the only error left is the op's own: float32 arithmetic and one rounding of each result."""

import pytest
import torch

import ddetr  # noqa: F401
from ddetr.ops import ms_deform_attn_pytorch
from op_cases import make_inputs

op = torch.ops.ddetr.ms_deform_attn
HALF = (torch.float16, torch.bfloat16)
# One rounding to the result's dtype (unit roundoff), with float32 sums before it; relative to
# the largest magnitude of the reference.
TOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2 * 2.0**-11, torch.bfloat16: 2 * 2.0**-8}
ACCEPTED = [(dt, dt) for dt in (torch.float64, torch.float32, *HALF)] + [(dt, torch.float32) for dt in HALF]
# (value, sampling_locations, attention_weights) dtypes, and the argument the error names
REFUSED = [
    (torch.float32, torch.float64, torch.float32, "sampling_locations"),
    (torch.float64, torch.float32, torch.float64, "sampling_locations"),
    (torch.float32, torch.bfloat16, torch.float32, "sampling_locations"),
    (torch.bfloat16, torch.float16, torch.bfloat16, "sampling_locations"),
    (torch.float16, torch.float64, torch.float16, "sampling_locations"),
    (torch.float16, torch.float32, torch.bfloat16, "attention_weights"),
    (torch.bfloat16, torch.float32, torch.float32, "attention_weights"),
]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def name(combo):
    return "-".join(str(dt).split(".")[-1] for dt in combo if isinstance(dt, torch.dtype))


def assert_scaled_close(got, want, tol, what):
    scale = max(1.0, want.abs().max().item())
    err = (got.double() - want).abs().max().item() / scale
    assert err <= tol, f"{what}: error {err:.3g} (relative to {scale:.3g}) above {tol:.3g}"


def cast_inputs(value_dtype, loc_dtype, device, shapes=((6, 7), (3, 4), (1, 2)), seed=0):
    value, shapes_t, start, loc, attn = make_inputs([list(s) for s in shapes], n=2, lq=9, m=2, d=8, p=3, seed=seed)
    return (
        value.to(device, value_dtype),
        shapes_t.to(device),
        start.to(device),
        loc.to(device, loc_dtype),
        attn.to(device, value_dtype),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("combo", ACCEPTED, ids=name)
def test_accepted_combinations_match_reference(combo, device):
    value_dtype, loc_dtype = combo
    value, shapes, start, loc, attn = (
        t.requires_grad_() if t.is_floating_point() else t for t in cast_inputs(value_dtype, loc_dtype, device)
    )
    out = op(value, shapes, start, loc, attn, 64)
    assert out.dtype == value_dtype
    leaves = [t.detach().double().requires_grad_() for t in (value, loc, attn)]
    ref = ms_deform_attn_pytorch(leaves[0], shapes.cpu(), leaves[1].cpu() if device != "cpu" else leaves[1], leaves[2])
    assert_scaled_close(out, ref, TOL[value_dtype], "output")
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device, value_dtype)
    got = torch.autograd.grad(out, (value, loc, attn), grad)
    want = torch.autograd.grad(ref, leaves, grad.double())
    for what, g, w, dt in zip(
        ("value", "sampling_locations", "attention_weights"), got, want, (value_dtype, loc_dtype, value_dtype)
    ):
        assert g.dtype == dt, f"grad {what} is {g.dtype}, expected {dt}"
        # the location gradient is computed from 16-bit products: the value's tolerance bounds it
        assert_scaled_close(g, w, max(TOL[dt], TOL[value_dtype]), f"grad {what}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("combo", REFUSED, ids=name)
def test_other_combinations_refused(combo, device):
    value_dtype, loc_dtype, attn_dtype, argument = combo
    value, shapes, start, loc, attn = cast_inputs(value_dtype, loc_dtype, device)
    for call in (op, torch.compile(op, fullgraph=True, backend="aot_eager")):  # eager, fake
        with pytest.raises(RuntimeError, match=f"{argument} must be"):
            call(value, shapes, start, loc, attn.to(attn_dtype), 64)


@pytest.mark.parametrize("value_dtype", HALF, ids=lambda dt: str(dt).split(".")[-1])
def test_float32_locations_are_not_rounded(value_dtype):
    # On a 100 x 134 map, rounding x to bfloat16 moves a point by up to ~0.25 px: an op that
    # rounded its locations would sit as far from the reference as this rounded reference does.
    gen = torch.Generator().manual_seed(3)
    shapes = torch.tensor([[100, 134]])
    start = torch.zeros(1, dtype=torch.int64)
    value = torch.randn(1, 100 * 134, 1, 4, generator=gen).to(value_dtype)
    loc = torch.rand(1, 64, 1, 1, 4, 2, generator=gen) * 0.8 + 0.1
    attn = torch.rand(1, 64, 1, 1, 4, generator=gen).to(value_dtype)
    out = op(value, shapes, start, loc, attn, 64)
    exact = ms_deform_attn_pytorch(value.double(), shapes, loc.double(), attn.double())
    rounded = ms_deform_attn_pytorch(value.double(), shapes, loc.to(value_dtype).double(), attn.double())
    err = (out.double() - exact).abs().max().item()
    err_if_rounded = (rounded - exact).abs().max().item()
    assert err < err_if_rounded / 4, (err, err_if_rounded)


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_casts_value_and_weights_keeps_locations(device):
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    value, shapes, start, loc, attn = cast_inputs(torch.float32, torch.float32, device)
    with torch.autocast(device, dtype=dtype):
        # as in a model: value from a linear layer (autocast dtype), weights from a softmax
        # (float32), locations from float32 reference points plus offsets
        projected = torch.nn.functional.linear(value, torch.eye(8, device=device))
        assert projected.dtype == dtype
        out = op(projected, shapes, start, loc, attn.softmax(-1), 64)
    assert out.dtype == dtype
    want = op(projected.to(dtype), shapes, start, loc, attn.softmax(-1).to(dtype), 64)
    assert torch.equal(out, want)  # the locations went in as float32, unrounded


def test_autocast_under_compile_matches_eager():
    value, shapes, start, loc, attn = cast_inputs(torch.float32, torch.float32, "cpu")

    def f(v, lo, a):
        return op(v, shapes, start, lo, a, 64)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = compiled(value, loc, attn), f(value, loc, attn)
    assert got.dtype == want.dtype == torch.bfloat16
    assert torch.equal(got, want)


def test_autocast_gradients_reach_float32_leaves():
    value, shapes, start, loc, attn = (
        t.requires_grad_() if t.is_floating_point() else t for t in cast_inputs(torch.float32, torch.float32, "cpu")
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = op(value, shapes, start, loc, attn, 64)
    out.float().square().sum().backward()
    for t in (value, loc, attn):
        assert t.grad is not None and t.grad.dtype == torch.float32 and t.grad.abs().sum() > 0
