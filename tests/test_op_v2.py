"""ms_deform_attn_v2, the generalised form (RT-DETRv2, D-FINE, DEIM): a point count per level
and the method ("default" bilinear, "discrete" nearest pixel), against our float64 reference
(ddetr.ops.ms_deform_attn_v2_pytorch) and HF transformers' multi_scale_deformable_attention_v2."""

import pytest
import torch

import ddetr
from ddetr.ops import ms_deform_attn_pytorch, ms_deform_attn_v2_pytorch
from op_v2_cases import METHODS, POINTS_LISTS, make_v2_inputs, op_args

op = torch.ops.ddetr.ms_deform_attn_v2
op_backward = torch.ops.ddetr.ms_deform_attn_v2_backward
LISTS = list(POINTS_LISTS.values())
IDS = list(POINTS_LISTS)


def hf_function():
    try:
        from transformers.models.d_fine.modeling_d_fine import multi_scale_deformable_attention_v2
    except ImportError as err:  # transformers absent, or a version without D-FINE
        pytest.skip(f"HF transformers' multi_scale_deformable_attention_v2 is not importable: {err}")
    return multi_scale_deformable_attention_v2


def grads(out, inputs, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("points", LISTS, ids=IDS)
def test_matches_float64_reference(points, method):
    value, shapes, loc, attn = make_v2_inputs(points, requires_grad=True, seed=1)
    out = ddetr.ms_deform_attn_v2(value, shapes, loc, attn, points, method)
    ref = ms_deform_attn_v2_pytorch(value, shapes, loc, attn, points, method)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    inputs = (value, attn, loc) if method == "default" else (value, attn)
    for got, want in zip(grads(out, inputs), grads(ref, inputs)):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("points", LISTS, ids=IDS)
def test_matches_hf(points, method, dtype):
    hf = hf_function()
    value, shapes, loc, attn = make_v2_inputs(points, dtype=dtype, requires_grad=True, seed=2)
    shapes_list = [tuple(s) for s in shapes.tolist()]  # as HF's models pass them
    out = ddetr.ms_deform_attn_v2(value, shapes_list, loc, attn, points, method)
    want = hf(value, shapes_list, loc, attn, points, method)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(out, want, rtol=tol, atol=tol)
    inputs = (value, attn, loc) if method == "default" else (value, attn)
    for got, ref in zip(grads(out, inputs), grads(want, inputs)):
        torch.testing.assert_close(got, ref, rtol=10 * tol, atol=10 * tol)


def test_discrete_picks_hf_pixels_at_every_edge():
    # Locations on pixel edges and centres in float32 (x * W + 0.5 an integer or near one),
    # and values that name their pixel: the pixel picked must be HF's, bit for bit.
    hf = hf_function()
    shapes = [(7, 13), (3, 5)]
    s = sum(h * w for h, w in shapes)
    value = torch.arange(s, dtype=torch.float32).view(1, s, 1, 1)
    xs = torch.cat([torch.arange(-2, 2 * 13 + 3) / (2 * 13), torch.tensor([1.0, 0.0, -0.0, 1e-30, 0.9999999])])
    k = xs.numel()
    loc = torch.stack([xs, xs.flip(0)], -1).float()  # (k, 2): x and y on edges of both maps
    points = [k // 2, k - k // 2]
    loc = loc.view(1, k, 1, 1, 2).transpose(1, 3).contiguous()  # (1, 1, 1, k, 2): one query
    attn = torch.zeros(1, 1, 1, k)
    for j in range(k):  # one point at a time: the output is the pixel's index
        a = attn.clone()
        a[..., j] = 1
        got = ddetr.ms_deform_attn_v2(value, shapes, loc, a, points, "discrete")
        want = hf(value, shapes, loc, a, points, "discrete")
        assert torch.equal(got, want), (j, loc[0, 0, 0, j].tolist(), got.item(), want.item())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("points", LISTS, ids=IDS)
def test_bfloat16_with_float32_locations(points, method):
    value, shapes, loc, attn = make_v2_inputs(points, seed=3)
    ref = ms_deform_attn_v2_pytorch(value, shapes, loc, attn, points, method)
    # the reference at the very inputs the op gets: 16-bit value and weights, float32 locations
    v16, a16, l32 = value.bfloat16(), attn.bfloat16(), loc.float()
    ref = ms_deform_attn_v2_pytorch(v16.double(), shapes, l32.double(), a16.double(), points, method)
    out = ddetr.ms_deform_attn_v2(v16, shapes, l32, a16, points, method)
    assert out.dtype == torch.bfloat16
    scale = ref.abs().max().item()
    assert (out.double() - ref).abs().max().item() <= 2 * 2.0**-8 * scale


def test_equal_counts_default_is_todays_op():
    value, shapes, loc, attn = make_v2_inputs([4, 4, 4], dtype=torch.float32, seed=4)
    v2 = ddetr.ms_deform_attn_v2(value, shapes, loc, attn, [4, 4, 4])
    v1 = ddetr.ms_deform_attn(value, shapes, loc.view(*loc.shape[:3], 3, 4, 2), attn.view(*attn.shape[:3], 3, 4))
    assert torch.equal(v1, v2)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("points", [[2, 1, 3], [1, 2], [2]], ids=str)
def test_gradcheck_float64(points, method):
    value, shapes, loc, attn = make_v2_inputs(points, n=1, lq=3, m=2, d=3, seed=5, requires_grad=True)
    if method == "discrete":  # keep points off pixel edges, where the nearest pixel jumps
        loc = loc.detach()
        f = lambda v, a: ddetr.ms_deform_attn_v2(v, shapes, loc, a, points, method)  # noqa: E731
        assert torch.autograd.gradcheck(f, (value, attn), eps=1e-6, atol=1e-5, rtol=1e-4)
    else:
        f = lambda v, lc, a: ddetr.ms_deform_attn_v2(v, shapes, lc, a, points, method)  # noqa: E731
        assert torch.autograd.gradcheck(f, (value, loc, attn), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_discrete_gives_no_location_gradient():
    value, shapes, loc, attn = make_v2_inputs([3, 6, 3], requires_grad=True, seed=6)
    out = ddetr.ms_deform_attn_v2(value, shapes, loc, attn, [3, 6, 3], "discrete")
    g_value, g_loc, g_attn = torch.autograd.grad(out.sum(), (value, loc, attn), allow_unused=True)
    assert g_loc is None and g_value is not None and g_attn is not None
    # the backward op returns an empty tensor in the location gradient's place
    grads_op = op_backward(torch.ones_like(out), *op_args(value, shapes, loc, attn, [3, 6, 3], "discrete"))
    assert grads_op[1].numel() == 0


@pytest.mark.parametrize("method", METHODS)
def test_thread_counts_bitwise_equal(method):
    points = [3, 6, 3]
    value, shapes, loc, attn = make_v2_inputs(points, n=2, lq=60, m=4, d=32, dtype=torch.float32, seed=7)
    args = op_args(value, shapes, loc, attn, points, method)
    grad = torch.randn(2, 60, 4 * 32)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append((op(*args), *op_backward(grad, *args)))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("method", METHODS)
def test_non_contiguous_inputs(method):
    points = [1, 8]
    value, shapes, loc, attn = make_v2_inputs(points, seed=8)
    want = ddetr.ms_deform_attn_v2(value, shapes, loc, attn, points, method)
    v = value.transpose(1, 2).contiguous().transpose(1, 2)
    lc = loc.transpose(0, 1).contiguous().transpose(0, 1)
    a = torch.cat([attn, attn], -1)[..., ::2].clone()[..., :]  # same values
    a = torch.stack([attn, attn], -1)[..., 0]  # a strided view
    assert not (v.is_contiguous() or lc.is_contiguous() or a.is_contiguous())
    torch.testing.assert_close(ddetr.ms_deform_attn_v2(v, shapes, lc, a, points, method), want, rtol=0, atol=0)


def opcheck_inputs():
    for i, (points, method) in enumerate([([3, 6, 3], "default"), ([1, 8], "discrete"), ([2], "default")]):
        value, shapes, loc, attn = make_v2_inputs(points, n=2, lq=3, m=2, d=3, seed=20 + i, requires_grad=True)
        yield op_args(value, shapes, loc, attn, points, method)
    value, shapes, loc, attn = make_v2_inputs([3, 6, 3], dtype=torch.float32, seed=24)
    yield op_args(value, shapes, loc, attn, [3, 6, 3], "discrete")


@pytest.mark.parametrize("i,args", list(enumerate(opcheck_inputs())))
def test_opcheck(i, args):
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("method", METHODS)
def test_opcheck_backward_op(method):
    value, shapes, loc, attn = make_v2_inputs([2, 1, 3], n=2, lq=3, m=2, d=4, seed=25)
    grad = torch.randn(2, 3, 8, dtype=torch.float64)
    torch.library.opcheck(op_backward, (grad, *op_args(value, shapes, loc, attn, [2, 1, 3], method)))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("method", METHODS)
def test_compile_fullgraph_matches_eager(method, backend):
    points = [3, 6, 3]
    value, shapes, loc, attn = make_v2_inputs(points, dtype=torch.float32, seed=26, requires_grad=True)
    shapes_list = [tuple(s) for s in shapes.tolist()]

    def f(v, lc, a):
        return ddetr.ms_deform_attn_v2(v, shapes_list, lc, a, points, method)

    inputs = (value, attn, loc) if method == "default" else (value, attn)
    out = f(value, loc, attn)
    got = torch.compile(f, fullgraph=True, backend=backend)(value, loc, attn)
    torch.testing.assert_close(got, out)
    for a, b in zip(grads(got, inputs), grads(out, inputs)):
        torch.testing.assert_close(a, b)


def test_one_forward_op_event_per_call():
    value, shapes, loc, attn = make_v2_inputs([3, 6, 3], dtype=torch.float32, seed=27)
    with torch.profiler.profile() as prof:
        ddetr.ms_deform_attn_v2(value, shapes, loc, attn, [3, 6, 3], "discrete")
    names = [e.name for e in prof.events() if e.name.startswith("ddetr::ms_deform_attn")]
    assert names == ["ddetr::ms_deform_attn_v2"]


@pytest.mark.parametrize("method", METHODS)
def test_autocast_follows_the_value_and_keeps_float32_locations(method):
    points = [3, 6, 3]
    value, shapes, loc, attn = make_v2_inputs(points, dtype=torch.float32, seed=28)
    outside = ddetr.ms_deform_attn_v2(value, shapes, loc, attn, points, method)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = ddetr.ms_deform_attn_v2(value, shapes, loc, attn, points, method)  # float32 stays
        out = ddetr.ms_deform_attn_v2(value.bfloat16(), shapes, loc, attn, points, method)
    assert same.dtype == torch.float32 and torch.equal(same, outside)
    assert out.dtype == torch.bfloat16
    want = ddetr.ms_deform_attn_v2(value.bfloat16(), shapes, loc, attn.bfloat16(), points, method)
    assert torch.equal(out, want)  # weights cast to the value's dtype, locations float32


@pytest.mark.parametrize("method", METHODS)
def test_weights_of_another_dtype_are_cast_to_the_values(method):
    points = [3, 6, 3]
    value, shapes, loc, attn = make_v2_inputs(points, dtype=torch.float64, seed=30)
    attn = attn.float().requires_grad_()
    value.requires_grad_()
    out = ddetr.ms_deform_attn_v2(value, shapes, loc, attn, points, method)
    assert out.dtype == torch.float64
    assert torch.equal(out, ddetr.ms_deform_attn_v2(value, shapes, loc, attn.double(), points, method))
    grad_value, grad_attn = torch.autograd.grad(out.sum(), (value, attn))
    assert grad_value.dtype == torch.float64 and grad_attn.dtype == torch.float32
    ref = ms_deform_attn_v2_pytorch(value, shapes, loc, attn.double(), points, method)
    torch.testing.assert_close(grad_attn, torch.autograd.grad(ref.sum(), attn)[0])


def test_reference_v2_equal_counts_is_the_2020_reference():
    value, shapes, loc, attn = make_v2_inputs([2, 2, 2], seed=29)
    v1 = ms_deform_attn_pytorch(value, shapes, loc.view(*loc.shape[:3], 3, 2, 2), attn.view(*attn.shape[:3], 3, 2))
    torch.testing.assert_close(ms_deform_attn_v2_pytorch(value, shapes, loc, attn, [2, 2, 2]), v1)


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "points,method,match",
    [
        ([3, 6], "default", "num_points_list has 2 entries but spatial_shapes has 3 levels"),
        (
            [3, 6, 2],
            "default",
            r"sampling_locations has 12 points \(dimension 3 of shape \(2, 5, 2, 12, 2\)\) "
            "but num_points_list sums to 11",
        ),
        ([3, 9, 0], "default", r"num_points_list\[2\] must be positive, got 0"),
        ([13, -1, 0], "default", r"num_points_list\[1\] must be positive, got -1"),
        ([3, 6, 3], "nearest", 'method must be "default" .* or "discrete" .*, got "nearest"'),
    ],
)
def test_errors_name_the_argument(points, method, match):
    value, shapes, loc, attn = make_v2_inputs([3, 6, 3], seed=30)
    with pytest.raises(RuntimeError, match=match):
        op(*op_args(value, shapes, loc, attn, points, method))


def test_error_for_the_2020_layout():
    value, shapes, loc, attn = make_v2_inputs([2, 2, 2], seed=31)
    with pytest.raises(RuntimeError, match=r"sampling_locations must have 5 dimensions \(N, Lq, M, sum of"):
        op(*op_args(value, shapes, loc.view(*loc.shape[:3], 3, 2, 2), attn, [2, 2, 2], "default"))
    with pytest.raises(RuntimeError, match="attention_weights has 5 points .* but num_points_list sums to 6"):
        op(*op_args(value, shapes, loc, attn[..., :5], [2, 2, 2], "default"))


def test_too_many_ragged_levels():
    shapes = torch.ones(17, 2, dtype=torch.int64)
    points = [1, 2] * 8 + [1]
    k = sum(points)
    value = torch.randn(1, 17, 1, 2, dtype=torch.float64)
    loc, attn = torch.rand(1, 1, 1, k, 2, dtype=torch.float64), torch.rand(1, 1, 1, k, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="different counts for at most 16 levels, got 17"):
        op(*op_args(value, shapes, loc, attn, points, "default"))
    # equal counts have no such bound
    out = op(*op_args(value, shapes, loc[..., :17, :], attn[..., :17], [1] * 17, "default"))
    assert out.shape == (1, 1, 2)


# ---------------------------------------------------------------------------- the module
@pytest.mark.parametrize("ref_dims", [2, 4])
@pytest.mark.parametrize("method", METHODS)
def test_module_points_per_level_matches_reference(method, ref_dims):
    from ddetr.nn import MSDeformAttn

    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=[3, 6, 3], method=method).double()
    assert module.sampling_offsets.out_features == 4 * 12 * 2 and module.attention_weights.out_features == 4 * 12
    shapes = torch.tensor([[6, 5], [3, 4], [2, 2]])
    s = int(shapes.prod(1).sum())
    query, src = torch.randn(2, 7, 32, dtype=torch.float64), torch.randn(2, s, 32, dtype=torch.float64)
    ref_pts = torch.rand(2, 7, 3, ref_dims, dtype=torch.float64) * 0.5 + 0.25
    with torch.no_grad():  # offsets that reach every level's border
        module.sampling_offsets.bias.mul_(3.0)
    outs = []
    for use_reference in (False, True):
        module.use_reference = use_reference
        out = module(query, ref_pts, src, shapes)
        outs.append((out, torch.autograd.grad(out.sum(), [module.value_proj.weight, module.attention_weights.weight])))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b)


def test_module_rejects_a_wrong_points_list():
    from ddetr.nn import MSDeformAttn

    with pytest.raises(ValueError, match="n_points must be a positive count or 3 of them"):
        MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=[3, 6])
    with pytest.raises(ValueError, match="method must be one of"):
        MSDeformAttn(d_model=32, n_levels=3, n_heads=4, method="nearest")


def test_python_entry_cannot_take_the_compiled_ops_order():
    # ddetr.ms_deform_attn orders (value, spatial_shapes, locations, weights) and takes the rest
    # by keyword: the compiled op's positional order is refused, not silently misread
    value, shapes, loc, attn = make_v2_inputs([2, 2, 2], seed=32)
    loc6, attn5 = loc.view(*loc.shape[:3], 3, 2, 2), attn.view(*attn.shape[:3], 3, 2)
    start = ddetr.ops.compute_level_start_index(shapes)
    with pytest.raises(TypeError):
        ddetr.ms_deform_attn(value, shapes, start, loc6, attn5, 64)
    torch.testing.assert_close(
        ddetr.ms_deform_attn(value, shapes, loc6, attn5, level_start_index=start, im2col_step=64),
        torch.ops.ddetr.ms_deform_attn(value, shapes, start, loc6, attn5, 64),
    )
