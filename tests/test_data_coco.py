"""The COCO-format loader: official handling of odd boxes, category ids, image modes,
clear errors for bad input, and padded batches."""

import json
import os

import pytest
import torch
from PIL import Image

from conftest import SYNTHETIC
from ddetr.data.coco import CocoDetection, DataError, coco_paths
from ddetr.data.collate import collate_fn
from ddetr.data.transforms import make_transforms


def _write(tmp_path, images, annotations, categories, mode="RGB"):
    folder = tmp_path / "img"
    folder.mkdir(exist_ok=True)
    for im in images:
        Image.new(mode, (im["width"], im["height"])).save(folder / im["file_name"])
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return str(folder), str(ann)


def _basic(tmp_path, mode="RGB", cat_ids=(1, 2)):
    images = [{"id": 7, "file_name": "a.png", "width": 40, "height": 30}]
    anns = [
        {"id": 1, "image_id": 7, "category_id": cat_ids[0], "bbox": [5, 5, 10, 10], "area": 100, "iscrowd": 0},
        {
            "id": 2,
            "image_id": 7,
            "category_id": cat_ids[1],
            "bbox": [30, 20, 20, 20],
            "area": 400,
            "iscrowd": 0,
        },  # clipped
        {"id": 3, "image_id": 7, "category_id": cat_ids[0], "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 1},  # crowd
        {"id": 4, "image_id": 7, "category_id": cat_ids[1], "bbox": [10, 10, 0, 5], "area": 0, "iscrowd": 0},  # empty
        {
            "id": 5,
            "image_id": 7,
            "category_id": cat_ids[1],
            "bbox": [50, 40, 5, 5],
            "area": 25,
            "iscrowd": 0,
        },  # outside
    ]
    cats = [{"id": c, "name": f"c{c}"} for c in cat_ids]
    return _write(tmp_path, images, anns, cats, mode)


def test_official_box_handling(tmp_path):
    ds = CocoDetection(*_basic(tmp_path))
    img, t = ds[0]
    assert img.size == (40, 30)
    assert t["boxes"].tolist() == [[5, 5, 15, 15], [30, 20, 40, 30]]
    assert t["labels"].tolist() == [1, 2]
    assert t["image_id"].tolist() == [7] and t["orig_size"].tolist() == [30, 40]
    assert ds.num_classes == 3


def test_large_category_ids_are_mapped(tmp_path):
    ds = CocoDetection(*_basic(tmp_path, cat_ids=(1000, 5)))
    _, t = ds[0]
    assert ds.num_classes == 2
    assert ds.label_to_category == {0: 5, 1: 1000}
    assert t["labels"].tolist() == [1, 0]
    assert ds.category_names == {0: "c5", 1: "c1000"}


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_image_modes_converted(tmp_path, mode):
    ds = CocoDetection(*_basic(tmp_path, mode=mode), transforms=make_transforms("val", 32))
    x, _ = ds[0]
    assert x.shape[0] == 3


def test_missing_image_names_file(tmp_path):
    folder, ann = _basic(tmp_path)
    os.remove(os.path.join(folder, "a.png"))
    ds = CocoDetection(folder, ann)
    with pytest.raises(DataError, match=r"a\.png.*image id 7"):
        ds[0]


def test_unreadable_image_names_file(tmp_path):
    folder, ann = _basic(tmp_path)
    with open(os.path.join(folder, "a.png"), "wb") as f:
        f.write(b"not an image")
    with pytest.raises(DataError, match=r"a\.png.*cannot read"):
        CocoDetection(folder, ann)[0]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["annotations"][0].pop("bbox"), r"annotations\[0\] \(id 1\).*bbox"),
        (lambda d: d["annotations"][1].update(bbox=[1, 2, "x", 4]), r"annotations\[1\] \(id 2\).*bbox"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 4]), r"annotations\[0\].*finite"),
        (lambda d: d["annotations"][2].update(image_id=99), r"annotations\[2\].*image_id 99"),
        (lambda d: d["annotations"][0].update(category_id=42), r"annotations\[0\].*category_id 42"),
        (lambda d: d["images"][0].pop("file_name"), r"images\[0\].*file_name"),
        (lambda d: d.pop("categories"), r"categories"),
    ],
)
def test_malformed_annotations_name_the_entry(tmp_path, mutate, message):
    folder, ann = _basic(tmp_path)
    with open(ann) as f:
        d = json.load(f)
    mutate(d)
    with open(ann, "w") as f:
        json.dump(d, f, allow_nan=True)
    with pytest.raises(DataError, match="ann.json: " + message):
        CocoDetection(folder, ann)


def test_not_json(tmp_path):
    folder, ann = _basic(tmp_path)
    with open(ann, "w") as f:
        f.write("{oops")
    with pytest.raises(DataError, match="ann.json: not valid JSON"):
        CocoDetection(folder, ann)


def test_synthetic_through_loader_and_padding(synthetic_data):
    ds = CocoDetection(*coco_paths(synthetic_data, "train"), transforms=make_transforms("train", 48))
    n = SYNTHETIC["num_classes"]  # category ids 1..n are the labels: n + 1 logits
    assert len(ds) == SYNTHETIC["num_train"] and ds.num_classes == n + 1
    batch = [ds[i] for i in range(3)]
    samples, targets = collate_fn(batch)
    x, mask = samples.decompose()
    assert x.shape[0] == 3 and mask.shape == (3, x.shape[2], x.shape[3])
    for (img, t), m, xi in zip(batch, mask, x):
        h, w = img.shape[1:]
        assert not m[:h, :w].any() and m[h:, :].all() and m[:, w:].all()
        assert torch.equal(xi[:, :h, :w], img) and (xi[:, h:, :] == 0).all()
        b = t["boxes"]
        assert ((b >= 0) & (b <= 1)).all() and (b[:, 2:] > 0).all()
        assert set(t["labels"].tolist()) <= set(range(1, n + 1))
