"""Inputs for the ms_deform_attn_v2 tests (the generalised form: points per level, method)."""

from __future__ import annotations

import torch

from ddetr.ops import compute_level_start_index

# The points lists the issue names: equal counts (the 2020 form), D-FINE's ragged list, a
# lopsided one, a single level.
POINTS_LISTS = {"444": [4, 4, 4], "363": [3, 6, 3], "18": [1, 8], "2": [2]}
SHAPES = {3: [[6, 5], [3, 4], [2, 2]], 2: [[5, 7], [3, 3]], 1: [[4, 9]]}
METHODS = ("default", "discrete")


def make_v2_inputs(points, n=2, lq=5, m=2, d=6, dtype=torch.float64, spread=(-0.1, 1.1), seed=0, requires_grad=False):
    """Random (value, spatial_shapes, locations, weights) for `points` (one count per level);
    locations partly off the map, weights positive and unnormalised."""
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(SHAPES[len(points)], dtype=torch.int64)
    s = int(shapes.prod(1).sum())
    k = sum(points)
    value = torch.randn(n, s, m, d, generator=g, dtype=torch.float64)
    lo, hi = spread
    loc = torch.rand(n, lq, m, k, 2, generator=g, dtype=torch.float64) * (hi - lo) + lo
    attn = torch.rand(n, lq, m, k, generator=g, dtype=torch.float64) + 0.1
    out = [t.to(dtype).requires_grad_(requires_grad) for t in (value, loc, attn)]
    return out[0], shapes, out[1], out[2]


def op_args(value, shapes, loc, attn, points, method):
    """The arguments of torch.ops.ddetr.ms_deform_attn_v2 (which takes the start index)."""
    return (value, shapes, compute_level_start_index(shapes), loc, attn, list(points), method)
