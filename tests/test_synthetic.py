"""The synthetic data set: deterministic by seed, valid COCO, tight boxes."""

import filecmp
import json
import os

import numpy as np
from PIL import Image

from conftest import SYNTHETIC
from ddetr.data.coco import CocoDetection, coco_paths
from ddetr.data.synthetic import make_synthetic

SMALL = {**SYNTHETIC, "num_train": 3, "num_val": 1}  # the shared set's options, fewer images


def test_deterministic_by_seed(tmp_path):
    a = make_synthetic(str(tmp_path / "a"), seed=3, **SMALL)
    b = make_synthetic(str(tmp_path / "b"), seed=3, **SMALL)
    c = make_synthetic(str(tmp_path / "c"), seed=4, **SMALL)
    for split in ("train2017", "val2017"):
        names = sorted(os.listdir(os.path.join(a, split)))
        _, mismatch, errors = filecmp.cmpfiles(os.path.join(a, split), os.path.join(b, split), names, shallow=False)
        assert not mismatch and not errors
    ja = json.load(open(os.path.join(a, "annotations", "instances_train2017.json")))
    jb = json.load(open(os.path.join(b, "annotations", "instances_train2017.json")))
    jc = json.load(open(os.path.join(c, "annotations", "instances_train2017.json")))
    assert ja == jb and ja["annotations"] != jc["annotations"]


def test_valid_coco_with_tight_boxes(synthetic_data):
    folder, ann = coco_paths(synthetic_data, "train")
    data = json.load(open(ann))
    assert [c["name"] for c in data["categories"]] == ["circle", "square", "triangle"]
    assert data["annotations"], "some objects"
    for a in data["annotations"]:
        img = next(i for i in data["images"] if i["id"] == a["image_id"])
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"]
        assert w >= 4 and h >= 4 and a["area"] > 0 and 1 <= a["category_id"] <= 3
    ds = CocoDetection(folder, ann)
    assert len(ds) == SYNTHETIC["num_train"]
    img, t = ds[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB"


def test_regenerates_only_on_config_change(tmp_path):
    root = str(tmp_path / "s")
    make_synthetic(root, **SMALL)
    path = os.path.join(root, "train2017", "000000.png")
    stamp = os.stat(path).st_mtime_ns
    make_synthetic(root, **SMALL)
    assert os.stat(path).st_mtime_ns == stamp
    make_synthetic(root, **{**SMALL, "seed": 9})
    assert not np.array_equal(np.asarray(Image.open(path)), np.zeros(1))
