"""The op, forward and forward + backward, ddetr against the pure-PyTorch reference."""

import pytest
import torch

from ddetr.bench.harness import DEVICE_DTYPES, run_case
from ddetr.bench.shapes import SPREADS, op_inputs, op_work
from ddetr.ops import ms_deform_attn_pytorch

op = torch.ops.ddetr.ms_deform_attn


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


ROUNDS = {("encoder", "cpu", "reference"): 3, ("encoder", "cpu", "ddetr"): 10}
ROUNDS.update(
    {(f"encoder-spread/{s}", "cpu", impl): n for s in SPREADS for impl, n in (("reference", 3), ("ddetr", 10))}
)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
@pytest.mark.parametrize("shape", ["encoder", "decoder", "small"] + [f"encoder-spread/{s}" for s in SPREADS])
@pytest.mark.parametrize("impl", ["reference", "ddetr"])  # reference first: ratio needs it
def test_op(benchmark, impl, shape, mode, device, dtype):
    batch = 1 if device == "cpu" else 2
    inputs = op_inputs(shape, batch, device, dtype, requires_grad=mode != "forward")
    fn = impl_fn(impl, inputs, backward=mode != "forward")
    rounds = ROUNDS.get((shape, device, impl), 20 if not shape.startswith("encoder") else 10)
    run_case(
        benchmark,
        ("op", shape, mode, device, str(dtype).split(".")[-1], f"N={batch}"),
        impl,
        fn,
        device,
        rounds,
        extra=dict(op_work(inputs), batch=batch),
    )
