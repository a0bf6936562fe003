"""Transforms against hand-computed boxes, and boxes that follow the pixels through the
whole random training pipeline."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from ddetr.data import transforms as T


def _target(boxes):
    b = torch.tensor(boxes, dtype=torch.float32)
    return {
        "boxes": b,
        "labels": torch.arange(len(boxes)),
        "area": (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]),
        "iscrowd": torch.zeros(len(boxes), dtype=torch.int64),
    }


def test_hflip_hand_computed():
    img = Image.new("RGB", (100, 50))
    _, t = T.hflip(img, _target([[10, 5, 30, 25], [0, 0, 100, 50]]))
    assert t["boxes"].tolist() == [[70, 5, 90, 25], [0, 0, 100, 50]]


def test_resize_hand_computed():
    img = Image.new("RGB", (100, 50))
    out, t = T.resize(img, _target([[10, 5, 30, 25]]), 25)
    assert out.size == (50, 25)
    assert t["boxes"].tolist() == [[5, 2.5, 15, 12.5]]
    assert t["area"].tolist() == [400 / 4]
    assert t["size"].tolist() == [25, 50]


def test_resize_max_size():
    # 200x100 at short side 100 would make the long side 200 > 150: short side becomes 75
    assert T.resize_size((200, 100), 100, 150) == (75, 150)
    assert T.resize_size((100, 200), 100, 1333) == (200, 100)
    assert T.resize_size((640, 480), 800, 1333) == (800, 1066)


def test_crop_hand_computed():
    img = Image.new("RGB", (100, 100))
    out, t = T.crop(img, _target([[10, 10, 50, 50], [80, 80, 95, 95], [35, 25, 45, 35]]), (20, 30, 40, 40))
    assert out.size == (40, 40)
    # first clipped at the crop's top-left, second outside: dropped, third inside: shifted
    assert t["boxes"].tolist() == [[0, 0, 20, 30], [5, 5, 15, 15]]
    assert t["labels"].tolist() == [0, 2]
    assert t["area"].tolist() == [600, 100]


def test_normalize_boxes_cxcywh():
    img = Image.new("RGB", (100, 50), (255, 0, 0))
    x, t = T.Normalize()(img, _target([[10, 5, 30, 25]]))
    assert x.shape == (3, 50, 100)
    assert torch.allclose(t["boxes"], torch.tensor([[0.2, 0.3, 0.2, 0.4]]))
    assert torch.allclose(x[0, 0, 0], torch.tensor((1 - 0.485) / 0.229))


def test_official_sizes():
    z = T.official_sizes(800)
    assert z["scales"] == list(range(480, 801, 32)) and z["max_size"] == 1333
    assert z["crop_range"] == (384, 600) and z["val_size"] == 800
    small = T.official_sizes(160)
    assert small["val_size"] == 160 and small["max_size"] == 267 and min(small["scales"]) == 96


def _pixel_box(x):
    """Box (x0, y0, x1, y1) in pixels of the bright region of a normalised image."""
    bright = x[0] > 0.5  # white square on black: normalised red > 2, black < -2
    ys, xs = torch.nonzero(bright, as_tuple=True)
    if len(xs) == 0:
        return None
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


@pytest.mark.parametrize("seed", range(12))
def test_boxes_follow_pixels_through_train_pipeline(seed):
    arr = np.zeros((120, 160, 3), np.uint8)
    arr[30:70, 20:90] = 255  # one object, box (20, 30, 90, 70)
    img = Image.fromarray(arr)
    random.seed(seed)
    tf = T.make_transforms("train", base_size=120)
    x, t = tf(img, _target([[20, 30, 90, 70]]))
    h, w = x.shape[1:]
    pix = _pixel_box(x)
    if len(t["boxes"]) == 0:  # cropped away: no (or only a sliver of) the object is left
        assert pix is None or (pix[2] - pix[0]) * (pix[3] - pix[1]) < 4
        return
    cx, cy, bw, bh = (t["boxes"][0] * torch.tensor([w, h, w, h])).tolist()
    box = torch.tensor([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
    assert pix is not None
    assert torch.allclose(box, pix, atol=1.6), (box, pix)  # bilinear edges blur ~1 px


def test_val_pipeline_size():
    img = Image.new("RGB", (300, 200))
    x, t = T.make_transforms("val", base_size=100)(img, _target([[0, 0, 30, 20]]))
    assert x.shape[1:] == (100, 150)
    assert torch.allclose(t["boxes"], torch.tensor([[0.05, 0.05, 0.1, 0.1]]))


@pytest.mark.parametrize("wh", [(3000, 1), (1, 3000), (1, 1), (1333, 1), (2, 5000)])
def test_resize_size_never_zero(wh):
    # a thin image's short side, scaled to keep the long side under max_size, stays >= 1 px
    h, w = T.resize_size(wh, 800, 1333)
    assert h >= 1 and w >= 1
