"""Box conversions, IoU and generalized IoU against hand-computed values."""

import pytest
import torch

from ddetr.util import box_ops


def test_conversions_roundtrip():
    xyxy = torch.tensor([[0.0, 0.0, 2.0, 4.0], [1.0, 2.0, 3.0, 3.0]])
    cxcywh = box_ops.box_xyxy_to_cxcywh(xyxy)
    assert torch.equal(cxcywh, torch.tensor([[1.0, 2.0, 2.0, 4.0], [2.0, 2.5, 2.0, 1.0]]))
    assert torch.allclose(box_ops.box_cxcywh_to_xyxy(cxcywh), xyxy)
    # any leading shape
    b = torch.rand(2, 3, 4)
    assert torch.allclose(box_ops.box_xyxy_to_cxcywh(box_ops.box_cxcywh_to_xyxy(b)), b, atol=1e-6)


def test_box_iou_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    iou, union = box_ops.box_iou(a, b)
    # overlap 1, union 4 + 4 - 1 = 7
    assert torch.allclose(iou, torch.tensor([[1 / 7, 1.0, 0.0]]))
    assert torch.allclose(union, torch.tensor([[7.0, 4.0, 5.0]]))


def test_generalized_box_iou_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 4.0, 1.0]])
    g = box_ops.generalized_box_iou(a, b)
    # 1: iou 1/7, enclosing 3x3 = 9, giou = 1/7 - (9 - 7)/9
    # 2: identical -> 1
    # 3: disjoint, union 4 + 1 = 5, enclosing (0,0)-(4,2) = 8 -> 0 - 3/8
    expected = torch.tensor([[1 / 7 - 2 / 9, 1.0, -3 / 8]])
    assert torch.allclose(g, expected)
    assert g.shape == (1, 3)


def test_generalized_box_iou_far_apart_tends_to_minus_one():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1000.0, 1000.0, 1001.0, 1001.0]])
    assert -1.0 <= box_ops.generalized_box_iou(a, b).item() < -0.99


def test_generalized_box_iou_empty():
    a = torch.rand(3, 4)
    a[:, 2:] += a[:, :2]
    assert box_ops.generalized_box_iou(a, torch.zeros(0, 4)).shape == (3, 0)
    assert box_ops.generalized_box_iou(torch.zeros(0, 4), a).shape == (0, 3)


def test_generalized_box_iou_zero_size_box_allowed():
    a = torch.tensor([[1.0, 1.0, 1.0, 1.0]])  # a point: x1 == x0 is not degenerate
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert torch.isfinite(box_ops.generalized_box_iou(a, b)).all()


@pytest.mark.parametrize("which", ["boxes1", "boxes2"])
def test_generalized_box_iou_degenerate_boxes_raise(which):
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    bad = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 1.0, 1.0]])  # x1 < x0 in row 1
    args = (bad, good) if which == "boxes1" else (good, bad)
    with pytest.raises(ValueError, match=rf"degenerate boxes in {which}.*rows \[1\]"):
        box_ops.generalized_box_iou(*args)


def test_generalized_box_iou_nan_raises():
    with pytest.raises(ValueError, match="degenerate"):
        box_ops.generalized_box_iou(torch.tensor([[0.0, 0.0, float("nan"), 1.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))


def test_generalized_box_iou_bad_shape():
    with pytest.raises(ValueError, match=r"boxes1 must have shape \(N, 4\)"):
        box_ops.generalized_box_iou(torch.zeros(2, 3), torch.zeros(2, 4))
