"""The compiled op against the pure-PyTorch grid_sample reference: forward and the three
gradients, float64 and float32, on many shapes."""

import pytest
import torch

import ddetr
from ddetr.ops import ms_deform_attn_pytorch
from op_cases import BAND_CASES, BAND_SHAPES, CASES, SPREAD_CASES, SPREAD_SHAPES, case_id, encoder_inputs, make_inputs

op = torch.ops.ddetr.ms_deform_attn


def run_both(inputs, grad_seed=1):
    value, shapes, start, loc, attn = inputs
    out = op(value, shapes, start, loc, attn, 64)
    ref = ms_deform_attn_pytorch(value.double(), shapes, loc.double(), attn.double())
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    got = torch.autograd.grad(out, (value, loc, attn), grad.to(out.dtype))
    want = torch.autograd.grad(ref, (value, loc, attn), grad)
    return out, ref, got, want


def assert_matches_reference(inputs):
    """Output and the three gradients against the float64 reference; returns the output."""
    out, ref, got, want = run_both(inputs)
    tol = dict(rtol=1e-10, atol=1e-10) if out.dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.double(), ref, **tol)
    for name, a, b in zip(("value", "sampling_locations", "attention_weights"), got, want):
        # location gradients scale with the map size; compare relative to their magnitude
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(
            a.double() / scale, b.double() / scale, **tol, msg=lambda m, name=name: f"grad {name}: {m}"
        )
    return out


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_reference(case, dtype):
    shapes, n, lq, m, d, p = case
    out = assert_matches_reference(make_inputs(shapes, n, lq, m, d, p, dtype=dtype, requires_grad=True))
    assert out.shape == (n, lq, m * d) and out.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_encoder_layout_matches_reference(dtype):
    # Lq == S: the CPU kernels walk the queries in column strips of each level's map; widths
    # that are not a multiple of the strip, a one-pixel-wide level and a 1 x 1 level
    shapes = [[9, 37], [5, 19], [3, 1], [1, 1]]
    s = sum(h * w for h, w in shapes)
    assert_matches_reference(make_inputs(shapes, 2, s, 3, 32, 2, dtype=dtype, requires_grad=True))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", sorted(BAND_CASES))
def test_encoder_bands_match_reference(case, dtype):
    # the CPU query walk's bands and strips on wide and narrow levels, points near their
    # query and anywhere (both ways the CPU backward walks the heads), corners off the map
    assert_matches_reference(encoder_inputs(BAND_SHAPES, n=2, p=4, **BAND_CASES[case], dtype=dtype, requires_grad=True))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", sorted(SPREAD_CASES))
def test_encoder_spreads_match_reference(case, dtype):
    # the encoder layout with points tens of columns away or anywhere: many points of one
    # value row come from far-apart queries (the CPU backward sums them sorted by cell)
    assert_matches_reference(
        encoder_inputs(SPREAD_SHAPES, n=2, m=3, d=8, p=3, **SPREAD_CASES[case], dtype=dtype, requires_grad=True)
    )


@pytest.mark.parametrize("spread", [(0.0, 1.0), (-3.0, 4.0), (0.45, 0.55)])
def test_location_spreads(spread):
    inputs = make_inputs([[7, 5], [4, 3], [2, 2]], 2, 13, 4, 8, 4, spread=spread, seed=3, requires_grad=True)
    out, ref, got, want = run_both(inputs)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_batch_97_with_im2col_step_64():
    # the 2020 op refused batch sizes not divisible by im2col_step
    value, shapes, start, loc, attn = make_inputs([[6, 5], [3, 3]], 97, 6, 2, 8, 2, seed=4)
    out = op(value, shapes, start, loc, attn, 64)
    ref = ms_deform_attn_pytorch(value, shapes, loc, attn)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_non_contiguous_inputs():
    value, shapes, start, loc, attn = make_inputs([[5, 6], [2, 3]], 3, 4, 2, 6, 3, seed=5)
    # same values, different strides: transposed copies viewed back, and a strided slice
    v_nc = value.transpose(1, 2).contiguous().transpose(1, 2)
    loc_nc = loc.permute(5, 0, 1, 2, 3, 4).contiguous().permute(1, 2, 3, 4, 5, 0)
    attn_nc = torch.stack([attn, attn], -1)[..., 0]
    shapes_nc = torch.stack([shapes, shapes], 0)[0].t().contiguous().t()
    assert not (v_nc.is_contiguous() or loc_nc.is_contiguous() or attn_nc.is_contiguous() or shapes_nc.is_contiguous())
    torch.testing.assert_close(
        op(v_nc, shapes_nc, start, loc_nc, attn_nc, 64), op(value, shapes, start, loc, attn, 64), rtol=0, atol=0
    )


def test_python_wrapper_derives_level_start_index():
    value, shapes, start, loc, attn = make_inputs([[4, 4], [2, 3], [1, 1]], seed=6)
    torch.testing.assert_close(
        ddetr.ms_deform_attn(value, shapes, loc, attn), op(value, shapes, start, loc, attn, 64), rtol=0, atol=0
    )
    assert start.tolist() == [0, 16, 22]


def test_spatial_shapes_int32_accepted():
    value, shapes, start, loc, attn = make_inputs([[4, 4], [2, 3]], seed=7)
    torch.testing.assert_close(
        op(value, shapes.int(), start.int(), loc, attn, 64), op(value, shapes, start, loc, attn, 64), rtol=0, atol=0
    )


def test_brute_force_single_point():
    # one point, one level, hand-placed between pixel centres: output is the bilinear mix
    value = torch.arange(12, dtype=torch.float64).view(1, 12, 1, 1)  # a 3 x 4 map
    shapes = torch.tensor([[3, 4]])
    x, y = 1.25 / 4, 1.5 / 3  # pixel coordinates (0.75, 1.0)
    loc = torch.tensor([x, y], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)
    attn = torch.full((1, 1, 1, 1, 1), 2.0, dtype=torch.float64)
    out = op(value, shapes, torch.tensor([0]), loc, attn, 1)
    # row 1: values 4..7; x = 0.75 mixes columns 0 and 1: 0.25 * 4 + 0.75 * 5
    assert out.item() == pytest.approx(2.0 * (0.25 * 4 + 0.75 * 5))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_location_gradient_at_pixel_centres(dtype):
    # Our convention (README): at an exact pixel centre, where bilinear interpolation has a
    # kink, the location gradient is the one-sided derivative that floor(loc * W - 0.5)
    # picks, toward the next column and line: (v[x + 1] - v[x]) * W, the value past the last
    # column being 0 (zero padding). Encoder points sit on centres at the model's
    # initialisation. Power-of-two sizes make every centre exact in floating point.
    H, W = 4, 8
    g = torch.Generator().manual_seed(11)
    v = torch.randn(H, W, generator=g, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    loc = torch.stack([(xs + 0.5) / W, (ys + 0.5) / H], -1).view(1, H * W, 1, 1, 1, 2)
    loc = loc.to(dtype).requires_grad_()
    attn = torch.full((1, H * W, 1, 1, 1), 1.5, dtype=dtype)
    out = op(v.view(1, H * W, 1, 1).to(dtype), torch.tensor([[H, W]]), torch.tensor([0]), loc, attn, 64)
    (got,) = torch.autograd.grad(out.sum(), loc)
    got = got.view(H, W, 2).double()
    right = torch.cat([v[:, 1:], torch.zeros(H, 1, dtype=torch.float64)], 1)
    below = torch.cat([v[1:], torch.zeros(1, W, dtype=torch.float64)], 0)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[..., 0], 1.5 * (right - v) * W, **tol)
    torch.testing.assert_close(got[..., 1], 1.5 * (below - v) * H, **tol)
    # the other side's derivative differs: the test can tell the two conventions apart
    left = torch.cat([torch.zeros(H, 1, dtype=torch.float64), v[:, :-1]], 1)
    assert not torch.allclose(got[..., 0], 1.5 * (v - left) * W, rtol=1e-3, atol=1e-3)
