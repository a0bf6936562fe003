"""SetCriterion: focal loss and box losses against hand-computed values, auxiliary and
encoder losses, empty targets, bad targets, distributed normalisation."""

import math

import pytest
import torch
import torch.distributed as dist

from ddetr.models import build_criterion
from ddetr.models.criterion import SetCriterion, build_weight_dict, sigmoid_focal_loss
from ddetr.models.matcher import HungarianMatcher


def _focal_term(x, t, alpha=0.25, gamma=2):
    p = 1 / (1 + math.exp(-x))
    ce = -math.log(p) if t == 1 else -math.log(1 - p)
    p_t = p if t == 1 else 1 - p
    alpha_t = alpha if t == 1 else 1 - alpha
    return alpha_t * (1 - p_t) ** gamma * ce


def test_sigmoid_focal_loss_hand_values():
    x = torch.tensor([[[0.0, 2.0, -1.0], [3.0, -2.0, 0.5]]])  # (B=1, Q=2, C=3)
    t = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    terms = [_focal_term(float(a), int(b)) for a, b in zip(x.flatten(), t.flatten())]
    # mean over the 2 queries, sum over the rest, / num_boxes
    expected = sum(terms) / 2 / 1.5
    assert sigmoid_focal_loss(x, t, 1.5).item() == pytest.approx(expected, rel=1e-6)
    # p = 0.5 on a positive: 0.25 * 0.25 * ln 2
    assert sigmoid_focal_loss(torch.zeros(1, 1, 1), torch.ones(1, 1, 1), 1).item() == pytest.approx(
        0.0625 * math.log(2)
    )
    # alpha < 0 disables the weighting
    assert sigmoid_focal_loss(torch.zeros(1, 1, 1), torch.ones(1, 1, 1), 1, alpha=-1).item() == pytest.approx(
        0.25 * math.log(2)
    )


def _criterion(num_classes=3):
    return SetCriterion(num_classes, HungarianMatcher(), build_weight_dict(dec_layers=2))


def test_losses_hand_values_single_match():
    # one query, one target: matching is forced; check every loss by hand
    logits = torch.tensor([[[0.0, 2.0, -1.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.4, 0.4]]])
    targets = [dict(labels=torch.tensor([0]), boxes=torch.tensor([[0.6, 0.5, 0.4, 0.2]]))]
    losses = _criterion()({"pred_logits": logits, "pred_boxes": boxes}, targets)
    expected_ce = sum(_focal_term(a, b) for a, b in zip([0.0, 2.0, -1.0], [1, 0, 0]))  # * Q / Q / num_boxes
    assert losses["loss_ce"].item() == pytest.approx(expected_ce, rel=1e-6)
    assert losses["loss_bbox"].item() == pytest.approx(0.1 + 0.0 + 0.0 + 0.2, rel=1e-5)
    # pred xyxy (0.3, 0.3, 0.7, 0.7), target (0.4, 0.4, 0.8, 0.6): inter 0.3*0.2 = 0.06,
    # union 0.16 + 0.08 - 0.06 = 0.18, enclosing 0.5*0.4 = 0.2
    giou = 0.06 / 0.18 - (0.2 - 0.18) / 0.2
    assert losses["loss_giou"].item() == pytest.approx(1 - giou, rel=1e-5)
    assert losses["class_error"].item() == pytest.approx(100.0)  # argmax is class 1, not 0
    # argmax (1) != last class (2): one predicted object, one target
    assert losses["cardinality_error"].item() == 0.0


def test_loss_keys_aux_and_enc():
    torch.manual_seed(0)
    crit = build_criterion(num_classes=5, dec_layers=3, two_stage=True, with_box_refine=True)
    outputs = {
        "pred_logits": torch.randn(2, 6, 5),
        "pred_boxes": torch.rand(2, 6, 4) * 0.5 + 0.2,
        "aux_outputs": [
            {"pred_logits": torch.randn(2, 6, 5), "pred_boxes": torch.rand(2, 6, 4) * 0.5 + 0.2} for _ in range(2)
        ],
        "enc_outputs": {"pred_logits": torch.randn(2, 6, 5), "pred_boxes": torch.rand(2, 6, 4) * 0.5 + 0.2},
    }
    targets = [
        dict(labels=torch.tensor([4, 1]), boxes=torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.1]])),
        dict(labels=torch.tensor([2]), boxes=torch.tensor([[0.5, 0.5, 0.5, 0.5]])),
    ]
    losses = crit(outputs, targets)
    base = ["loss_ce", "loss_bbox", "loss_giou", "cardinality_error"]
    expected = set(base + ["class_error"]) | {k + s for k in base for s in ("_0", "_1", "_enc")}
    assert set(losses) == expected
    # every weighted loss is present and weighted 2 / 5 / 2
    assert set(crit.weight_dict) == {
        k + s for k in ("loss_ce", "loss_bbox", "loss_giou") for s in ("", "_0", "_1", "_enc")
    }
    assert (
        crit.weight_dict["loss_ce_1"] == 2
        and crit.weight_dict["loss_bbox_enc"] == 5
        and crit.weight_dict["loss_giou"] == 2
    )
    assert all(torch.isfinite(v) for v in losses.values())
    # the training loss: 2 / 5 / 2 times the class / L1 / GIoU losses of every output; the
    # diagnostics (class_error, cardinality_error) count for nothing
    expected_total = sum(
        w * losses[name + s]
        for name, w in (("loss_ce", 2), ("loss_bbox", 5), ("loss_giou", 2))
        for s in ("", "_0", "_1", "_enc")
    )
    assert crit.weighted_total(losses).item() == pytest.approx(expected_total.item(), rel=1e-6)


def test_enc_losses_are_class_agnostic():
    # only class 0 counts for the encoder outputs: changing other classes' logits changes nothing
    torch.manual_seed(1)
    crit = _criterion(num_classes=3)
    enc = {"pred_logits": torch.randn(1, 4, 3), "pred_boxes": torch.rand(1, 4, 4) * 0.4 + 0.3}
    targets = [dict(labels=torch.tensor([2]), boxes=torch.tensor([[0.5, 0.5, 0.2, 0.2]]))]
    main = {"pred_logits": torch.randn(1, 4, 3), "pred_boxes": torch.rand(1, 4, 4) * 0.4 + 0.3}
    losses = crit(dict(main, enc_outputs=enc), targets)
    bin_only = crit(dict(enc), [dict(labels=torch.tensor([0]), boxes=targets[0]["boxes"])])
    assert losses["loss_ce_enc"].item() == pytest.approx(bin_only["loss_ce"].item())
    assert targets[0]["labels"].tolist() == [2]  # the caller's targets are untouched


def test_empty_targets_train():
    torch.manual_seed(0)
    crit = _criterion()
    logits = torch.randn(2, 5, 3, requires_grad=True)
    boxes = (torch.rand(2, 5, 4) * 0.5 + 0.2).requires_grad_()
    targets = [dict(labels=torch.zeros(0, dtype=torch.int64), boxes=torch.zeros(0, 4))] * 2
    losses = crit({"pred_logits": logits, "pred_boxes": boxes}, targets)
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0
    # all queries are negatives; num_boxes clamps to 1
    expected = sigmoid_focal_loss(logits, torch.zeros_like(logits), 1) * 5
    assert losses["loss_ce"].item() == pytest.approx(expected.item())
    total = crit.weighted_total(losses)
    total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_mixed_empty_and_nonempty_targets():
    crit = _criterion()
    outputs = {"pred_logits": torch.randn(2, 4, 3), "pred_boxes": torch.rand(2, 4, 4) * 0.5 + 0.2}
    targets = [
        dict(labels=torch.zeros(0, dtype=torch.int64), boxes=torch.zeros(0, 4)),
        dict(labels=torch.tensor([1, 2]), boxes=torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]])),
    ]
    losses = crit(outputs, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_out_of_range_boxes_accepted_as_official():
    # the official code does not clamp normalised targets: a box past the border still trains
    crit = _criterion()
    outputs = {"pred_logits": torch.randn(1, 4, 3), "pred_boxes": torch.rand(1, 4, 4) * 0.5 + 0.2}
    targets = [dict(labels=torch.tensor([1, 0]), boxes=torch.tensor([[1.1, 0.5, 0.4, 0.2], [0.5, -0.05, 0.3, 0.0]]))]
    assert all(torch.isfinite(v) for v in crit(outputs, targets).values())


@pytest.mark.parametrize(
    "target,match",
    [
        (dict(labels=torch.tensor([3]), boxes=torch.tensor([[0.5, 0.5, 0.1, 0.1]])), r"labels.*\[0, 3\)"),
        (dict(labels=torch.tensor([-1]), boxes=torch.tensor([[0.5, 0.5, 0.1, 0.1]])), r"labels.*\[0, 3\)"),
        (dict(labels=torch.tensor([0]), boxes=torch.tensor([[0.5, 0.5, -0.1, 0.1]])), "w, h >= 0"),
        (dict(labels=torch.tensor([0]), boxes=torch.tensor([[0.5, float("nan"), 0.1, 0.1]])), "finite"),
        (dict(labels=torch.tensor([0, 1]), boxes=torch.tensor([[0.5, 0.5, 0.1, 0.1]])), r"\(n, 4\)"),
        (dict(boxes=torch.tensor([[0.5, 0.5, 0.1, 0.1]])), "'labels' and 'boxes'"),
    ],
)
def test_bad_targets_rejected(target, match):
    outputs = {"pred_logits": torch.randn(1, 4, 3), "pred_boxes": torch.rand(1, 4, 4)}
    with pytest.raises(ValueError, match=match):
        _criterion()(outputs, [target])


def test_num_boxes_averaged_across_processes(tmp_path):
    # a one-process gloo group exercises the all_reduce path
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        crit = _criterion()
        outputs = {"pred_logits": torch.randn(1, 4, 3), "pred_boxes": torch.rand(1, 4, 4) * 0.5 + 0.2}
        targets = [dict(labels=torch.tensor([1, 2]), boxes=torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]]))]
        with_dist = crit(outputs, targets)
    finally:
        dist.destroy_process_group()
    without = crit(outputs, targets)
    for k in without:
        assert with_dist[k].item() == pytest.approx(without[k].item())


def test_build_criterion_options():
    crit = build_criterion(
        num_classes=7,
        cls_loss_coef=1,
        bbox_loss_coef=3,
        giou_loss_coef=4,
        focal_alpha=0.5,
        set_cost_class=1,
        set_cost_bbox=2,
        set_cost_giou=3,
        dec_layers=2,
    )
    assert crit.num_classes == 7 and crit.focal_alpha == 0.5
    assert crit.weight_dict == {
        "loss_ce": 1,
        "loss_bbox": 3,
        "loss_giou": 4,
        "loss_ce_0": 1,
        "loss_bbox_0": 3,
        "loss_giou_0": 4,
        "loss_ce_enc": 1,
        "loss_bbox_enc": 3,
        "loss_giou_enc": 4,
    }
    assert (crit.matcher.cost_class, crit.matcher.cost_bbox, crit.matcher.cost_giou) == (1, 2, 3)
    assert set(build_criterion(aux_loss=False).weight_dict) == {"loss_ce", "loss_bbox", "loss_giou"}
    with pytest.raises(TypeError, match="unknown option"):
        build_criterion(not_an_option=1)
