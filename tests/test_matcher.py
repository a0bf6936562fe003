"""Hungarian matcher: optimal against brute force, the focal class cost, empty targets."""

import itertools

import pytest
import torch

from ddetr.models.matcher import HungarianMatcher, build_matcher
from ddetr.util.box_ops import box_cxcywh_to_xyxy, generalized_box_iou


def _random_boxes(n, gen):
    cxcy = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
    return torch.cat([cxcy, wh], -1)


def _cost_matrix(matcher, logits, boxes, labels, tgt_boxes):
    """The cost written out independently: per (query, target)."""
    q, t = logits.shape[0], labels.shape[0]
    cost = torch.zeros(q, t, dtype=torch.float64)
    a, g = 0.25, 2.0
    for i in range(q):
        for j in range(t):
            p = logits[i, labels[j]].double().sigmoid()
            focal_pos = a * (1 - p) ** g * -torch.log(p + 1e-8)
            focal_neg = (1 - a) * p**g * -torch.log(1 - p + 1e-8)
            l1 = (boxes[i] - tgt_boxes[j]).abs().sum().double()
            giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes[i : i + 1]), box_cxcywh_to_xyxy(tgt_boxes[j : j + 1]))[
                0, 0
            ].double()
            cost[i, j] = (
                matcher.cost_class * (focal_pos - focal_neg) + matcher.cost_bbox * l1 - matcher.cost_giou * giou
            )
    return cost


def _brute_force(cost):
    q, t = cost.shape
    best = float("inf")
    if t <= q:
        for perm in itertools.permutations(range(q), t):
            best = min(best, sum(cost[perm[j], j].item() for j in range(t)))
    else:
        for perm in itertools.permutations(range(t), q):
            best = min(best, sum(cost[i, perm[i]].item() for i in range(q)))
    return best


@pytest.mark.parametrize("seed,num_queries,num_targets", [(0, 5, 3), (1, 6, 6), (2, 4, 1), (3, 3, 5), (4, 7, 4)])
def test_matcher_optimal_against_brute_force(seed, num_queries, num_targets):
    gen = torch.Generator().manual_seed(seed)
    num_classes = 4
    matcher = HungarianMatcher()
    bs = 2
    logits = torch.randn(bs, num_queries, num_classes, generator=gen) * 2
    boxes = torch.stack([_random_boxes(num_queries, gen) for _ in range(bs)])
    targets = [
        dict(
            labels=torch.randint(0, num_classes, (num_targets - b,), generator=gen),
            boxes=_random_boxes(num_targets - b, gen),
        )
        for b in range(bs)
    ]
    indices = matcher({"pred_logits": logits, "pred_boxes": boxes}, targets)
    assert len(indices) == bs
    for b, (src, tgt) in enumerate(indices):
        nt = len(targets[b]["labels"])
        assert src.dtype == tgt.dtype == torch.int64
        assert len(src) == len(tgt) == min(num_queries, nt)
        assert len(set(src.tolist())) == len(src) and len(set(tgt.tolist())) == len(tgt)
        cost = _cost_matrix(matcher, logits[b], boxes[b], targets[b]["labels"], targets[b]["boxes"])
        total = sum(cost[i, j].item() for i, j in zip(src.tolist(), tgt.tolist()))
        assert total == pytest.approx(_brute_force(cost), rel=1e-5, abs=1e-5)


def test_matcher_prefers_right_class_and_box():
    # two queries, two targets; query 0 sits on target 1 with its class, and vice versa
    logits = torch.full((1, 2, 3), -5.0)
    logits[0, 0, 2] = 5.0
    logits[0, 1, 0] = 5.0
    boxes = torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]]])
    targets = [dict(labels=torch.tensor([0, 2]), boxes=torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]))]
    ((src, tgt),) = HungarianMatcher()({"pred_logits": logits, "pred_boxes": boxes}, targets)
    assert dict(zip(src.tolist(), tgt.tolist())) == {0: 1, 1: 0}


def test_matcher_empty_targets():
    logits, boxes = torch.randn(3, 5, 4), torch.rand(3, 5, 4) * 0.5 + 0.25
    targets = [
        dict(labels=torch.zeros(0, dtype=torch.int64), boxes=torch.zeros(0, 4)),
        dict(labels=torch.tensor([1]), boxes=torch.tensor([[0.5, 0.5, 0.2, 0.2]])),
        dict(labels=torch.zeros(0, dtype=torch.int64), boxes=torch.zeros(0, 4)),
    ]
    indices = HungarianMatcher()({"pred_logits": logits, "pred_boxes": boxes}, targets)
    assert [len(i) for i, _ in indices] == [0, 1, 0]
    assert all(i.dtype == torch.int64 for i, _ in indices)


def test_matcher_all_targets_empty():
    targets = [dict(labels=torch.zeros(0, dtype=torch.int64), boxes=torch.zeros(0, 4))] * 2
    indices = HungarianMatcher()({"pred_logits": torch.randn(2, 5, 4), "pred_boxes": torch.rand(2, 5, 4)}, targets)
    assert [(len(i), len(j)) for i, j in indices] == [(0, 0), (0, 0)]


def test_build_matcher_costs_and_validation():
    m = build_matcher(1, 2, 3)
    assert (m.cost_class, m.cost_bbox, m.cost_giou, m.alpha) == (1, 2, 3, 0.25)
    with pytest.raises(ValueError, match="all matcher costs are 0"):
        HungarianMatcher(0, 0, 0)
