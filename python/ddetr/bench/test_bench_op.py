"""The op, forward and forward + backward, ddetr against the pure-PyTorch reference; and the
generalised form (ms_deform_attn_v2) against HF transformers' multi_scale_deformable_attention_v2."""

import pytest
import torch

import ddetr
from ddetr.bench.harness import DEVICE_DTYPES, run_case
from ddetr.bench.shapes import BATCH, LARGE_SPREADS, SPREADS, V2_SHAPES, VALUE_SWEEP, op_inputs, op_v2_inputs, op_work
from ddetr.ops import ms_deform_attn_pytorch, ms_deform_attn_v2_pytorch

op = torch.ops.ddetr.ms_deform_attn


def with_backward(forward, args, backward):
    """`forward` alone under no_grad, or forward and backward (ones as the output gradient)."""
    if not backward:

        def run():
            with torch.no_grad():
                return forward()

        return run
    grad = torch.ones(1, device=args["value"].device, dtype=args["value"].dtype)

    def run():
        out = forward()
        torch.autograd.backward(out, grad.expand_as(out))
        for k in ("value", "sampling_locations", "attention_weights"):
            args[k].grad = None

    return run


def impl_fn(impl, inputs, backward):
    args = inputs
    if impl == "ddetr":

        def forward():
            return op(
                args["value"],
                args["spatial_shapes"],
                args["level_start_index"],
                args["sampling_locations"],
                args["attention_weights"],
                64,
            )
    else:

        def forward():
            return ms_deform_attn_pytorch(
                args["value"], args["spatial_shapes"], args["sampling_locations"], args["attention_weights"]
            )

    return with_backward(forward, args, backward)


ENCODERS = ["encoder", "encoder-batch2"] + [
    f"encoder-{k}/{s}" for k, ss in (("spread", SPREADS), ("large", LARGE_SPREADS)) for s in ss
]
SWEEP = [f"value-sweep/{s}" for s in VALUE_SWEEP]  # smallest first: the others' growth needs it
ROUNDS = {(shape, "cpu", impl): n for shape in ENCODERS for impl, n in (("reference", 3), ("ddetr", 10))}
ROUNDS.update({(f"encoder-large/{s}", "cpu", "ddetr"): 5 for s in LARGE_SPREADS})
# the median of the smallest value-sweep case, per (impl, device, dtype), for the growth column
_sweep_base: dict = {}


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize(
    "shape,mode",
    [(s, m) for s in ["decoder", "small", *ENCODERS] for m in ("forward", "forward_backward")]
    + [(s, "forward") for s in SWEEP],
)
@pytest.mark.parametrize("impl", ["reference", "ddetr"])  # reference first: ratio needs it
def test_op(benchmark, impl, shape, mode, device, dtype):
    batch = BATCH.get(shape, 1 if device == "cpu" else 2)
    inputs = op_inputs(shape, batch, device, dtype, requires_grad=mode != "forward")
    fn = impl_fn(impl, inputs, backward=mode != "forward")
    rounds = ROUNDS.get((shape, device, impl), 20 if not shape.startswith(("encoder", "value")) else 10)
    run_case(
        benchmark,
        ("op", shape, mode, device, str(dtype).split(".")[-1], f"N={batch}"),
        impl,
        fn,
        device,
        rounds,
        extra=dict(op_work(inputs), batch=batch),
    )
    stats = getattr(benchmark, "stats", None)
    if shape in SWEEP and stats is not None:  # the time against the smallest value's
        key = (impl, device, dtype)
        if shape == SWEEP[0]:
            _sweep_base[key] = stats.stats.median
        if key in _sweep_base:
            benchmark.extra_info["time_vs_smallest_value"] = stats.stats.median / _sweep_base[key]


def hf_v2():
    """HF transformers' pure-PyTorch multi_scale_deformable_attention_v2, or None."""
    try:
        from transformers.models.d_fine.modeling_d_fine import multi_scale_deformable_attention_v2
    except ImportError:
        return None
    return multi_scale_deformable_attention_v2


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
@pytest.mark.parametrize("shape", list(V2_SHAPES))
@pytest.mark.parametrize("impl", ["reference", "ddetr"])  # reference first: ratio needs it
def test_op_v2(benchmark, impl, shape, mode, device, dtype):
    """The reference is HF's function where transformers is installed, else ddetr's own
    pure-PyTorch one (the same grid_sample / gather computation); extra_info names it."""
    batch = 1 if device == "cpu" else 2
    args = op_v2_inputs(shape, batch, device, dtype, requires_grad=mode != "forward")
    hf = hf_v2()
    fn = ddetr.ms_deform_attn_v2 if impl == "ddetr" else hf or ms_deform_attn_v2_pytorch
    names = ("value", "spatial_shapes", "sampling_locations", "attention_weights", "num_points_list", "method")

    def forward():
        return fn(*(args[k] for k in names))

    loc = args["sampling_locations"]
    points = loc.shape[0] * loc.shape[1] * loc.shape[2] * loc.shape[3]
    run_case(
        benchmark,
        ("op_v2", shape, mode, device, str(dtype).split(".")[-1], f"N={batch}"),
        impl,
        with_backward(forward, args, backward=mode != "forward"),
        device,
        5 if impl == "reference" else 20,
        extra=dict(
            points=points,
            batch=batch,
            method=args["method"],
            reference="transformers multi_scale_deformable_attention_v2" if hf else "ddetr ms_deform_attn_v2_pytorch",
        ),
    )
