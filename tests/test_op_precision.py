"""The op's precision policy: the value's dtype leads, as in grid_sample and MMCV. Attention
weights of any floating dtype are cast to it; locations share it, or are float32 beside a
float16 / bfloat16 value (never rounded to 16 bits); float32 accumulation; every other mix
refused. Autocast (CPU, and CUDA when present) keeps the value's dtype, so a float32 call
returns exactly what it returns outside. Each accepted combination is checked against the
float64 reference evaluated at the very inputs the op got, so the only error left is the op's
own: float32 arithmetic and one rounding of each result."""

import pytest
import torch

import ddetr  # noqa: F401
from ddetr.ops import compute_level_start_index, location_dtype, ms_deform_attn_pytorch
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
    (torch.float32, torch.float32, torch.int64, "attention_weights"),
    (torch.bfloat16, torch.float32, torch.bool, "attention_weights"),
]
FLOATS = (torch.float64, torch.float32, *HALF)
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


def _large_map_inputs(value_dtype):
    # On a 100 x 134 map, rounding x to bfloat16 moves a point by up to ~0.25 px
    gen = torch.Generator().manual_seed(3)
    shapes = torch.tensor([[100, 134]])
    start = torch.zeros(1, dtype=torch.int64)
    value = torch.randn(1, 100 * 134, 1, 4, generator=gen).to(value_dtype)
    loc = torch.rand(1, 64, 1, 1, 4, 2, generator=gen) * 0.8 + 0.1
    attn = torch.rand(1, 64, 1, 1, 4, generator=gen).to(value_dtype)
    return shapes, start, value, loc, attn


def _assert_unrounded(out, shapes, value, loc, attn, value_dtype):
    # an op that rounded its locations would sit as far from the reference as this rounded
    # reference does
    exact = ms_deform_attn_pytorch(value.double(), shapes, loc.double(), attn.double())
    rounded = ms_deform_attn_pytorch(value.double(), shapes, loc.to(value_dtype).double(), attn.double())
    err = (out.double() - exact).abs().max().item()
    err_if_rounded = (rounded - exact).abs().max().item()
    assert err < err_if_rounded / 4, (err, err_if_rounded)


@pytest.mark.parametrize("value_dtype", HALF, ids=lambda dt: str(dt).split(".")[-1])
def test_float32_locations_are_not_rounded(value_dtype):
    shapes, start, value, loc, attn = _large_map_inputs(value_dtype)
    _assert_unrounded(op(value, shapes, start, loc, attn, 64), shapes, value, loc, attn, value_dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("combo", [(v, w) for v in FLOATS for w in FLOATS if v != w], ids=lambda c: name(c))
def test_weights_of_another_dtype_are_cast_to_the_values(combo, device):
    value_dtype, attn_dtype = combo
    value, shapes, start, loc, attn = (
        t.requires_grad_() if t.is_floating_point() else t
        for t in cast_inputs(value_dtype, location_dtype(value_dtype), device)
    )
    weights = attn.detach().to(attn_dtype).requires_grad_()
    out = op(value, shapes, start, loc, weights, 64)
    assert out.dtype == value_dtype
    # exactly the call with the weights cast by hand, in eager and under the fake kernel
    want = op(value, shapes, start, loc, weights.to(value_dtype), 64)
    assert torch.equal(out, want)
    torch._dynamo.reset()  # one compiled op per case: dynamo's recompile limit is 8
    compiled = torch.compile(op, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(value, shapes, start, loc, weights, 64), want)
    # the weights' gradient in their own dtype, as accurate as the value's dtype allows
    leaves = [
        value.detach().double().requires_grad_(),
        loc.detach().double(),
        weights.detach().to(value_dtype).double(),
    ]
    leaves[2].requires_grad_()
    ref = ms_deform_attn_pytorch(leaves[0].cpu(), shapes.cpu(), leaves[1].cpu(), leaves[2].cpu())
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device, value_dtype)
    got = torch.autograd.grad(out, (value, weights), grad)
    want_grads = torch.autograd.grad(ref, (leaves[0], leaves[2]), grad.double().cpu())
    assert got[1].dtype == attn_dtype
    for what, g, w in zip(("value", "attention_weights"), got, want_grads):
        assert_scaled_close(g.cpu(), w, max(TOL[value_dtype], TOL[g.dtype]), f"grad {what}")


@pytest.mark.parametrize("device", DEVICES)
def test_half_value_beside_float32_locations_and_weights(device):
    # MMCV's half-precision case: a small float16 value (0.01 * rand) with float32 locations
    # and normalised float32 weights, against the float32 reference of the unrounded inputs.
    gen = torch.Generator().manual_seed(3)
    shapes = torch.tensor([[6, 4], [3, 2]])
    start = compute_level_start_index(shapes)
    value = torch.rand(1, 30, 2, 2, generator=gen) * 0.01
    loc = torch.rand(1, 2, 2, 2, 2, 2, generator=gen)
    attn = torch.rand(1, 2, 2, 2, 2, generator=gen) + 1e-5
    attn /= attn.sum((-1, -2), keepdim=True)
    ref = ms_deform_attn_pytorch(value, shapes, loc, attn)
    out = op(value.to(device, torch.float16), shapes, start, loc.to(device), attn.to(device), 64).cpu()
    assert out.dtype == torch.float16
    assert (out.float() - ref).abs().max() < 1e-5
    assert ((out.float() - ref).abs() / ref.abs()).max() < 1e-2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("autocast_dtype", HALF, ids=lambda dt: str(dt).split(".")[-1])
@pytest.mark.parametrize("value_dtype", FLOATS, ids=lambda dt: str(dt).split(".")[-1])
def test_autocast_keeps_the_values_dtype(value_dtype, autocast_dtype, device):
    # whatever the weights' and locations' floating dtypes, the call under autocast is the call
    # outside it with the weights in the value's dtype and the locations in location_dtype's
    value, shapes, start, loc, attn = cast_inputs(value_dtype, torch.float32, device)
    want = op(value, shapes, start, loc.to(location_dtype(value_dtype)), attn, 64)
    for loc_dtype in (torch.float32, value_dtype):
        for attn_dtype in FLOATS:
            with torch.autocast(device, dtype=autocast_dtype):
                out = op(value, shapes, start, loc.to(loc_dtype), attn.to(attn_dtype), 64)
            assert out.dtype == value_dtype
            if attn_dtype == value_dtype and loc_dtype == location_dtype(value_dtype):
                assert torch.equal(out, want)  # a float32 call: bitwise what it is outside
            else:
                assert torch.equal(
                    out,
                    op(
                        value,
                        shapes,
                        start,
                        loc.to(loc_dtype).to(location_dtype(value_dtype)),
                        attn.to(attn_dtype).to(value_dtype),
                        64,
                    ),
                )


@pytest.mark.parametrize("value_dtype", HALF, ids=lambda dt: str(dt).split(".")[-1])
def test_autocast_keeps_float32_locations_unrounded(value_dtype):
    # a 16-bit value from a layer under autocast, float32 locations: the op reads them unrounded
    shapes, start, value, loc, attn = _large_map_inputs(value_dtype)
    with torch.autocast("cpu", dtype=value_dtype):
        out = op(value, shapes, start, loc, attn.float(), 64)
    _assert_unrounded(out, shapes, value, loc, attn, value_dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_in_a_model_runs_the_op_in_the_layers_dtype(device):
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    value, shapes, start, loc, attn = cast_inputs(torch.float32, torch.float32, device)
    with torch.autocast(device, dtype=dtype):
        # as in a model: value from a linear layer (autocast dtype), weights from a softmax
        # (float32), locations from float32 reference points plus offsets
        projected = torch.nn.functional.linear(value, torch.eye(8, device=device))
        assert projected.dtype == dtype
        out = op(projected, shapes, start, loc, attn.softmax(-1), 64)
    assert out.dtype == dtype
    want = op(projected, shapes, start, loc, attn.softmax(-1).to(dtype), 64)
    assert torch.equal(out, want)  # the locations went in as float32, unrounded


@pytest.mark.parametrize("autocast_dtype", HALF, ids=lambda dt: str(dt).split(".")[-1])
def test_autocast_under_compile_matches_eager_and_no_autocast(autocast_dtype):
    value, shapes, start, loc, attn = cast_inputs(torch.float32, torch.float32, "cpu")

    def f(v, lo, a):
        return op(v, shapes, start, lo, a, 64)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    outside = f(value, loc, attn)
    with torch.autocast("cpu", dtype=autocast_dtype):
        got, want = compiled(value, loc, attn), f(value, loc, attn)
        mixed = compiled(value.to(autocast_dtype), loc, attn)
    assert got.dtype == want.dtype == torch.float32
    assert torch.equal(got, want) and torch.equal(got, outside)
    assert mixed.dtype == autocast_dtype
    assert torch.equal(mixed, f(value.to(autocast_dtype), loc, attn.to(autocast_dtype)))


def test_autocast_gradients_reach_their_leaves_in_their_dtypes():
    value, shapes, start, loc, attn = (
        t.requires_grad_() if t.is_floating_point() else t for t in cast_inputs(torch.float32, torch.float32, "cpu")
    )
    outside = torch.autograd.grad(op(value, shapes, start, loc, attn, 64).square().sum(), (value, loc, attn))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = op(value, shapes, start, loc, attn, 64)
        half = op(value.bfloat16(), shapes, start, loc, attn, 64)
    for g, want in zip(torch.autograd.grad(out.square().sum(), (value, loc, attn)), outside):
        assert g.dtype == torch.float32 and torch.equal(g, want)  # float32 throughout
    for t, g in zip((value, loc, attn), torch.autograd.grad(half.float().square().sum(), (value, loc, attn))):
        assert g.dtype == t.dtype and g.abs().sum() > 0
