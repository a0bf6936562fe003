"""PostProcess on constructed outputs: top-k over queries x classes, labels, absolute boxes."""

import pytest
import torch

from ddetr.models import build_postprocessors
from ddetr.models.postprocess import PostProcess


def test_topk_labels_and_boxes():
    logits = torch.full((2, 3, 4), -10.0)
    logits[0, 1, 2] = 3.0  # best of image 0: query 1, class 2
    logits[0, 2, 0] = 1.0  # second: query 2, class 0
    logits[0, 1, 3] = 0.0  # third: query 1 again, another class
    logits[1, 0, 1] = 2.0
    boxes = torch.tensor(
        [
            [[0.5, 0.5, 0.2, 0.2], [0.25, 0.5, 0.5, 1.0], [0.5, 0.25, 1.0, 0.5]],
            [[0.5, 0.5, 1.0, 1.0], [0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2]],
        ]
    )
    sizes = torch.tensor([[100, 200], [50, 40]])  # (h, w)
    res = PostProcess(num_select=3)({"pred_logits": logits, "pred_boxes": boxes}, sizes)
    assert len(res) == 2
    r0 = res[0]
    assert r0["labels"].tolist() == [2, 0, 3]
    assert torch.allclose(r0["scores"], torch.sigmoid(torch.tensor([3.0, 1.0, 0.0])))
    # query 1: cxcywh (0.25, 0.5, 0.5, 1.0) -> xyxy (0, 0, 0.5, 1) -> (0, 0, 100, 100) on w=200, h=100
    assert torch.allclose(r0["boxes"][0], torch.tensor([0.0, 0.0, 100.0, 100.0]))
    assert torch.allclose(r0["boxes"][1], torch.tensor([0.0, 0.0, 200.0, 50.0]))
    assert torch.equal(r0["boxes"][2], r0["boxes"][0])
    assert res[1]["labels"][0].item() == 1
    assert torch.allclose(res[1]["boxes"][0], torch.tensor([0.0, 0.0, 40.0, 50.0]))
    assert all(torch.all(r["scores"][:-1] >= r["scores"][1:]) for r in res)


def test_default_keeps_100_and_label_is_index_mod_classes():
    torch.manual_seed(0)
    logits, boxes = torch.randn(2, 300, 91), torch.rand(2, 300, 4)
    post = build_postprocessors()["bbox"]
    res = post({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[480, 640], [600, 800]]))
    assert [r["scores"].shape for r in res] == [torch.Size([100])] * 2
    assert res[0]["labels"].dtype == torch.int64 and res[0]["boxes"].shape == (100, 4)
    flat = logits[0].sigmoid().flatten()
    top = flat.topk(100).indices
    assert torch.equal(res[0]["labels"], top % 91)
    assert torch.allclose(res[0]["scores"], flat[top])


def test_fewer_candidates_than_num_select():
    res = PostProcess()(
        {"pred_logits": torch.randn(1, 5, 3), "pred_boxes": torch.rand(1, 5, 4)}, torch.tensor([[10, 10]])
    )
    assert res[0]["scores"].shape == (15,)


def test_target_sizes_as_list_and_bad_shape():
    out = {"pred_logits": torch.randn(2, 5, 3), "pred_boxes": torch.rand(2, 5, 4)}
    assert len(PostProcess()(out, [[10, 20], [30, 40]])) == 2
    with pytest.raises(ValueError, match=r"target_sizes must be \(2, 2\)"):
        PostProcess()(out, torch.tensor([[10, 20]]))
