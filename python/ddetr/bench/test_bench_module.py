"""MSDeformAttn (projections + op) forward + backward at the COCO encoder and decoder
shapes, with the compiled op against the pure-PyTorch reference."""

import pytest
import torch

from ddetr.bench.harness import DEVICE_DTYPES, run_case
from ddetr.bench.shapes import SHAPES
from ddetr.nn import MSDeformAttn
from ddetr.ops import compute_level_start_index


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("shape", ["encoder", "decoder"])
@pytest.mark.parametrize("impl", ["reference", "ddetr"])
def test_module_forward_backward(benchmark, impl, shape, device, dtype):
    levels, lq, m, d, p, _ = SHAPES[shape]
    batch = 1 if device == "cpu" else 2
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor(levels, device=device)
    start = compute_level_start_index(shapes)
    s = int(shapes.prod(1).sum())
    lq = s if lq is None else lq
    module = MSDeformAttn(m * d, len(levels), m, p).to(device=device, dtype=dtype)
    module.use_reference = impl == "reference"
    src = torch.randn(batch, s, m * d, generator=g).to(device, dtype).requires_grad_()
    query = src if lq == s else torch.randn(batch, lq, m * d, generator=g).to(device, dtype)
    ref = torch.rand(batch, lq, len(levels), 2, generator=g).to(device, dtype)

    def step():
        out = module(query, ref, src, shapes, start)
        out.sum().backward()
        module.zero_grad(set_to_none=True)
        src.grad = None

    rounds = 3 if (device == "cpu" and shape == "encoder") else 10
    run_case(
        benchmark,
        ("MSDeformAttn", shape, "forward_backward", device, str(dtype).split(".")[-1], f"N={batch}"),
        impl,
        step,
        device,
        rounds,
    )
