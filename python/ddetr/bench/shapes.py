"""Benchmark shapes (../shared/reference/benchmarks.md) and input generation."""

from __future__ import annotations

import torch

from ddetr.ops import compute_level_start_index

COCO_LEVELS = [(100, 134), (50, 67), (25, 34), (13, 17)]  # 800 x 1066 image, strides 8..64
SMALL_LEVELS = [(16, 20), (8, 10), (4, 5), (2, 3)]

# name -> (levels, queries (None: one per value row, as in the encoder), heads, channels, points,
# spread: how far a point lies from its reference, in pixels of its level (Gaussian sigma), or
# "uniform" for locations anywhere on the map)
SHAPES = {
    "encoder": (COCO_LEVELS, None, 8, 32, 4, 2.0),
    "decoder": (COCO_LEVELS, 300, 8, 32, 4, 2.0),
    "small": (SMALL_LEVELS, 100, 8, 32, 4, 2.0),
}
# The encoder with its points spread as a trained model's (across whole objects: tens of
# columns at the finest level) and beyond: the CPU backward must not fall off a cliff there.
SPREADS = {"1px": 1.0, "8px": 8.0, "32px": 32.0, "uniform": "uniform"}
SHAPES.update({f"encoder-spread/{name}": (COCO_LEVELS, None, 8, 32, 4, sigma) for name, sigma in SPREADS.items()})

# Maps no cache holds, where the op's random gathers miss on any machine: the encoder of a
# 1600 x 2132 input (S = 71,000, a 69 MiB float32 value), and the usual encoder at batch 2.
LARGE_LEVELS = [(200, 267), (100, 134), (50, 67), (25, 34)]
LARGE_SPREADS = ("1px", "8px", "uniform")
SHAPES.update({f"encoder-large/{name}": (LARGE_LEVELS, None, 8, 32, 4, SPREADS[name]) for name in LARGE_SPREADS})
SHAPES["encoder-batch2"] = SHAPES["encoder"]
BATCH = {"encoder-batch2": 2}  # shapes whose batch is their own (else 1 on the CPU, 2 on GPUs)

# The same work (8,000 queries, uniform points) on maps scaled so that the value grows from
# 4.4 to 69 MiB: how the op's time depends on the value's size rather than on its work.
VALUE_SWEEP = {
    "4MiB": [(50, 67), (25, 34), (13, 17), (7, 9)],
    "17MiB": COCO_LEVELS,
    "69MiB": LARGE_LEVELS,
}
SHAPES.update({f"value-sweep/{name}": (levels, 8000, 8, 32, 4, "uniform") for name, levels in VALUE_SWEEP.items()})


# The generalised form (ms_deform_attn_v2), decoder shapes at a 640 x 640 image (strides 8, 16,
# 32): name -> (levels, queries, heads, channels, points per level, method). D-FINE's decoder
# samples [3, 6, 3] points bilinearly; RT-DETRv2's (HF's config defaults: 300 queries, 8 heads
# of 32 channels, 4 points on 3 levels) with its "discrete" method.
REALTIME_LEVELS = [(80, 80), (40, 40), (20, 20)]
V2_SHAPES = {
    "dfine-decoder": (REALTIME_LEVELS, 300, 8, 32, [3, 6, 3], "default"),
    "rtdetrv2-decoder-discrete": (REALTIME_LEVELS, 300, 8, 32, [4, 4, 4], "discrete"),
}


def op_v2_inputs(shape: str, batch: int, device, dtype, requires_grad=False, seed=0):
    """Inputs of ms_deform_attn_v2 in HF's argument order (spatial shapes as the models' list),
    points 2 pixels (Gaussian) around random reference points, as at initialisation."""
    levels, lq, m, d, points, method = V2_SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in levels)
    k = sum(points)
    value = torch.randn(batch, s, m, d, generator=g)
    ref = torch.rand(batch, lq, 1, 1, 2, generator=g)
    wh = torch.cat([torch.tensor([[w, h]], dtype=torch.float32).expand(p, 2) for (h, w), p in zip(levels, points)])
    loc = ref + 2.0 * torch.randn(batch, lq, m, k, 2, generator=g) / wh
    attn = torch.rand(batch, lq, m, k, generator=g).softmax(-1)
    tensors = [t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in (value, loc, attn)]
    return dict(
        value=tensors[0],
        spatial_shapes=list(levels),
        sampling_locations=tensors[1],
        attention_weights=tensors[2],
        num_points_list=points,
        method=method,
    )


def op_inputs(shape: str, batch: int, device, dtype, requires_grad=False, seed=0):
    levels, lq, m, d, p, spread = SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(levels, dtype=torch.int64)
    s = int(spatial_shapes.prod(1).sum())
    lq = s if lq is None else lq
    nl = len(levels)
    value = torch.randn(batch, s, m, d, generator=g)
    if lq == s:
        # encoder: each query sits on its own pixel, as in the model (reference points at
        # pixel centres), which makes neighbouring queries read neighbouring rows
        ref = torch.cat(
            [
                torch.stack(
                    torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")[::-1], -1
                ).view(-1, 2)
                for h, w in levels
            ]
        )
        ref = ref.expand(batch, lq, 2)
    else:
        ref = torch.rand(batch, lq, 2, generator=g)
    if spread == "uniform":
        loc = torch.rand(batch, lq, m, nl, p, 2, generator=g)
    else:  # offsets of `spread` pixels of each level (2: as the model at initialisation)
        wh = spatial_shapes.flip(-1).to(torch.float32)  # (L, 2) as (W, H)
        offsets = spread * torch.randn(batch, lq, m, nl, p, 2, generator=g) / wh[:, None, :]
        loc = ref[:, :, None, None, None, :] + offsets
    attn = torch.rand(batch, lq, m, nl * p, generator=g).softmax(-1).view(batch, lq, m, nl, p)
    tensors = [t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in (value, loc, attn)]
    return dict(
        value=tensors[0],
        spatial_shapes=spatial_shapes.to(device),
        level_start_index=compute_level_start_index(spatial_shapes).to(device),
        sampling_locations=tensors[1],
        attention_weights=tensors[2],
    )


def op_work(inputs) -> dict:
    """Arithmetic and memory traffic the op cannot avoid, for the roofline columns.

    Forward: per sample point, 4 corners x D multiply-adds (8 D flops) plus ~30 flops of
    location and weight arithmetic; the gathered corner rows (4 D elements per point) come
    mostly from cache, so the compulsory traffic is reading value, locations and weights
    once and writing the output. Backward roughly triples both (the corner rows are read
    again and grad_value written).
    """
    v, loc = inputs["value"], inputs["sampling_locations"]
    n, s, m, d = v.shape
    _, lq, _, nl, p, _ = loc.shape
    points = n * lq * m * nl * p
    elt = v.element_size()
    compulsory = (v.numel() + loc.numel() + inputs["attention_weights"].numel() + n * lq * m * d) * elt
    return dict(
        points=points, flops_fwd=points * (8 * d + 30), bytes_fwd=compulsory, gathered_bytes_fwd=points * 4 * d * elt
    )
