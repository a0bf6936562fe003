"""COCO evaluation: perfect predictions score AP 1.0, shifted boxes less, and detections
split across processes merge to the same result."""

import pytest
import torch

from ddetr.data.coco import coco_from_dict, coco_paths, load_coco_json
from ddetr.engine.evaluate import CocoEvaluator, coco_metrics, to_coco_detections


@pytest.fixture(scope="module")
def gt(synthetic_data):
    return coco_from_dict(load_coco_json(coco_paths(synthetic_data, "val")[1]))


def _perfect(coco, shift=0.0):
    results = {}
    for img_id in coco.getImgIds():
        anns = coco.imgToAnns[img_id]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes += shift * torch.cat([boxes[:, 2:] - boxes[:, :2]] * 2, 1)
        results[img_id] = {
            "boxes": boxes,
            "scores": torch.linspace(1, 0.5, len(anns)),
            "labels": torch.tensor([a["category_id"] for a in anns]),
        }
    return results


def test_perfect_predictions_ap_one(gt):
    metrics, summary = coco_metrics(gt, to_coco_detections(_perfect(gt)))
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(1.0)
    assert "Average Precision" in summary


def test_shifted_boxes_score_less(gt):
    small, _ = coco_metrics(gt, to_coco_detections(_perfect(gt, shift=0.1)))
    large, _ = coco_metrics(gt, to_coco_detections(_perfect(gt, shift=0.3)))
    assert 0 < small["AP"] < 1.0 and small["AP50"] == pytest.approx(1.0)
    assert large["AP"] < small["AP"] and large["AP50"] < 1.0


def test_wrong_labels_and_no_detections(gt):
    res = _perfect(gt)
    for r in res.values():
        r["labels"] = r["labels"] % 4 + 1  # every class wrong
    assert coco_metrics(gt, to_coco_detections(res))[0]["AP"] == 0.0
    assert coco_metrics(gt, [])[0]["AP"] == 0.0


def test_label_mapping(gt):
    res = _perfect(gt)
    for r in res.values():
        r["labels"] = r["labels"] - 1
    dets = to_coco_detections(res, {label: label + 1 for label in range(4)})
    assert coco_metrics(gt, dets)[0]["AP"] == pytest.approx(1.0)


def test_evaluator_deduplicates_repeated_images(gt):
    ev = CocoEvaluator(gt)
    res = _perfect(gt)
    ev.update(res)
    first = next(iter(res))
    ev.update({first: res[first]})  # a DistributedSampler repeats images to even out ranks
    assert ev.summarize()["AP"] == pytest.approx(1.0)
