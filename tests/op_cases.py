"""Inputs for the ms_deform_attn tests: one place that every op test draws from."""
from __future__ import annotations

import torch

from ddetr.ops import compute_level_start_index


def make_inputs(shapes, n=2, lq=5, m=2, d=4, p=3, dtype=torch.float64, device="cpu",
                spread=(-0.1, 1.1), seed=0, requires_grad=False):
    """Random (value, spatial_shapes, level_start_index, locations, weights).

    Locations are uniform in `spread` (so partly outside [0, 1] by default); weights are
    positive and not normalised, so a wrong weight index shows.
    """
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    s = int(spatial_shapes.prod(1).sum())
    nl = len(shapes)
    value = torch.randn(n, s, m, d, generator=g, dtype=torch.float64)
    lo, hi = spread
    loc = torch.rand(n, lq, m, nl, p, 2, generator=g, dtype=torch.float64) * (hi - lo) + lo
    attn = torch.rand(n, lq, m, nl, p, generator=g, dtype=torch.float64) + 0.1
    out = [t.to(device=device, dtype=dtype).requires_grad_(requires_grad)
           for t in (value, loc, attn)]
    return (out[0], spatial_shapes.to(device), compute_level_start_index(spatial_shapes).to(device),
            out[1], out[2])


# (spatial shapes, N, Lq, M, D, P): varied levels, odd channel counts, 1x1 levels, a single
# query, non-square maps.
CASES = [
    ([[6, 4], [3, 2]], 2, 5, 2, 1, 3),
    ([[5, 7], [3, 3], [1, 1]], 1, 7, 3, 3, 2),
    ([[8, 8], [4, 4], [2, 2], [1, 1]], 2, 9, 2, 30, 4),
    ([[10, 13], [5, 7], [3, 4], [2, 2]], 1, 11, 8, 32, 4),
    ([[4, 9]], 3, 1, 1, 64, 5),
    ([[1, 1], [1, 1]], 2, 4, 2, 71, 2),
    ([[3, 5], [2, 1]], 1, 3, 1, 257, 1),
]


def case_id(case):
    shapes, n, lq, m, d, p = case
    return f"L{len(shapes)}-N{n}-Lq{lq}-M{m}-D{d}-P{p}"
