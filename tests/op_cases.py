"""Inputs for the ms_deform_attn tests: one place that every op test draws from."""

from __future__ import annotations

import torch

from ddetr.ops import compute_level_start_index


def make_inputs(
    shapes, n=2, lq=5, m=2, d=4, p=3, dtype=torch.float64, device="cpu", spread=(-0.1, 1.1), seed=0, requires_grad=False
):
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
    out = [t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in (value, loc, attn)]
    return (out[0], spatial_shapes.to(device), compute_level_start_index(spatial_shapes).to(device), out[1], out[2])


def encoder_inputs(shapes, n=1, m=2, d=8, p=2, reach=2.0, far=0.0, dtype=torch.float64, seed=0, requires_grad=False):
    """The encoder layout (one query per value pixel, Lq = S): each query samples around its
    own position on every level, `reach` pixels (Gaussian) of that level, as a trained model
    does; a fraction `far` of the points lies anywhere on (or just off) the map instead.
    """
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    s = int(spatial_shapes.prod(1).sum())
    nl = len(shapes)
    centres = torch.cat(
        [
            torch.stack(
                torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")[::-1], -1
            ).reshape(-1, 2)
            for h, w in shapes
        ]
    ).double()
    wh = spatial_shapes.flip(-1).double()  # (L, 2) as (W, H)
    offsets = reach * torch.randn(n, s, m, nl, p, 2, generator=g, dtype=torch.float64) / wh[:, None]
    loc = centres[None, :, None, None, None] + offsets
    anywhere = torch.rand(loc.shape, generator=g, dtype=torch.float64) * 1.2 - 0.1
    pick = torch.rand(n, s, m, nl, p, 1, generator=g, dtype=torch.float64) < far
    loc = torch.where(pick, anywhere, loc)
    value = torch.randn(n, s, m, d, generator=g, dtype=torch.float64)
    attn = torch.rand(n, s, m, nl, p, generator=g, dtype=torch.float64) + 0.1
    out = [t.to(dtype=dtype).requires_grad_(requires_grad) for t in (value, loc, attn)]
    return (out[0], spatial_shapes, compute_level_start_index(spatial_shapes), out[1], out[2])


# Encoder-layout maps wide enough that the CPU kernels walk each level's queries in bands of
# columns, then strips (cpp/ms_deform_attn/cpu/query_plan.h), with widths that are not a
# multiple of a strip: two wide levels, two narrow ones.
BAND_SHAPES = [[10, 70], [4, 35], [3, 18], [2, 9]]
# "near": points around their own query, a few anywhere (the CPU backward then walks a
# thread's heads together); "anywhere": every point anywhere (it walks them one at a time).
BAND_CASES = {"near": dict(reach=2.0, far=0.01), "anywhere": dict(reach=2.0, far=1.0)}

# Wide spreads, as trained encoders sample across whole objects: points tens of columns from
# their query (many beyond the map's top and bottom), and every point anywhere.
SPREAD_SHAPES = [[24, 80], [12, 40], [6, 20], [3, 10]]
SPREAD_CASES = {"24px": dict(reach=24.0), "uniform": dict(far=1.0)}


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
