"""Inputs, eager reference outputs and a comparison shared by the export tests, on the tiny
model (conftest.py) of every variant."""

import torch

import conftest
from ddetr.models.postprocess import top_detections
from ddetr.nn import MSDeformAttn
from ddetr.util.misc import NestedTensor

NUM_CLASSES = 7
NUM_SELECT = 30  # top detections of the exported postprocess (20 queries x 7 classes to pick from)
# two sizes from one exported file; the second a batch of 2 with one image padded
SIZES = [(1, 128, 160), (2, 96, 136)]


def tiny_model(variant: str):
    """The tiny model, its attention really depending on the query (the paper's init makes
    the offsets and weights constant) and its box heads not zero."""
    model = conftest.tiny_model(variant, num_classes=NUM_CLASSES)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MSDeformAttn):
                torch.nn.init.normal_(m.sampling_offsets.weight, std=0.05)
                torch.nn.init.normal_(m.attention_weights.weight, std=0.2)
        for head in model.bbox_embed:
            torch.nn.init.normal_(head.layers[-1].weight, std=0.01)
    return model


def inputs(batch: int, h: int, w: int):
    g = torch.Generator().manual_seed(h * w + batch)
    images = torch.randn(batch, 3, h, w, generator=g)
    mask = torch.zeros(batch, h, w, dtype=torch.bool)
    if batch > 1:  # the second image is smaller: padded right and bottom
        images[1, :, h - 24 :], images[1, :, :, w - 40 :] = 0, 0
        mask[1, h - 24 :], mask[1, :, w - 40 :] = True, True
    target_sizes = torch.tensor([[h, w]] * batch, dtype=torch.float32)
    return images, mask, target_sizes


@torch.no_grad()
def reference(model, images, mask, target_sizes):
    """ddetr's eager outputs: pred_logits, pred_boxes, scores, labels, boxes."""
    out = model(NestedTensor(images, mask))
    return (
        out["pred_logits"],
        out["pred_boxes"],
        *top_detections(out["pred_logits"], out["pred_boxes"], target_sizes, NUM_SELECT),
    )


def assert_matches(got, ref, rtol=1e-4):
    """Each output within rtol of the reference, relative to the reference's largest value;
    integer outputs (labels) exactly."""
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        g = torch.as_tensor(g)
        assert tuple(g.shape) == tuple(r.shape), (i, tuple(g.shape), tuple(r.shape))
        if not r.is_floating_point():
            assert torch.equal(g.to(r.dtype), r), f"output {i} differs"
            continue
        err = (g.double() - r.double()).abs().max().item() / max(r.abs().max().item(), 1e-12)
        assert err <= rtol, f"output {i}: relative error {err:.3g} > {rtol}"
