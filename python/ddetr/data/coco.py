"""A COCO-format detection data set: an image folder plus an instances JSON.

Loading follows the official handling: crowd boxes are dropped, boxes are clipped to the
image, boxes left with zero width or height are dropped. Anything malformed in the JSON or
an image that cannot be read raises `DataError` naming the file and the entry.

Labels: with category ids in 0..255 the label is the category id itself, as in the official
code (COCO's 91 classes, and official checkpoints, work unchanged); larger ids are mapped to
0..K-1 in sorted order. `CocoDetection.label_to_category` undoes either mapping.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from .transforms import make_transforms

MAX_IDENTITY_ID = 255


class DataError(UserError, ValueError):
    """A data set entry that cannot be used, with the file and the entry named."""


def _check(cond: bool, file: str, where: str, what: str) -> None:
    if not cond:
        raise DataError(f"{file}: {where}: {what}")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_coco_json(ann_file: str) -> dict:
    """Read and validate an instances JSON; returns the parsed dict."""
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{ann_file}: annotation file not found") from None
    except IsADirectoryError:
        raise DataError(f"{ann_file}: is a folder, expected an instances JSON file") from None
    except OSError as e:
        raise DataError(f"{ann_file}: cannot read the annotation file: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{ann_file}: not valid JSON: {e}") from None
    except RecursionError:
        raise DataError(f"{ann_file}: JSON nested too deeply to be an instances file") from None
    _check(isinstance(data, dict), ann_file, "top level", "expected a JSON object")
    for key in ("images", "annotations", "categories"):
        _check(isinstance(data.get(key), list), ann_file, key, "missing or not a list")
    image_ids = set()
    for i, img in enumerate(data["images"]):
        where = f"images[{i}]"
        _check(isinstance(img, dict), ann_file, where, "not an object")
        _check(isinstance(img.get("id"), int), ann_file, where, "'id' missing or not an integer")
        _check(
            isinstance(img.get("file_name"), str),
            ann_file,
            f"{where} (id {img['id']})",
            "'file_name' missing or not a string",
        )
        _check(img["id"] not in image_ids, ann_file, where, f"duplicate image id {img['id']}")
        for key in ("width", "height"):
            ok = key not in img or _finite(img[key])
            _check(ok, ann_file, where, f"'{key}' must be a number, got {img.get(key)!r}")
        image_ids.add(img["id"])
    cat_ids = set()
    for i, cat in enumerate(data["categories"]):
        where = f"categories[{i}]"
        _check(
            isinstance(cat, dict) and isinstance(cat.get("id"), int) and cat["id"] >= 0,
            ann_file,
            where,
            "'id' missing or not a non-negative integer",
        )
        _check(cat["id"] not in cat_ids, ann_file, where, f"duplicate category id {cat['id']}")
        cat_ids.add(cat["id"])
    ann_ids = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        _check(isinstance(ann, dict), ann_file, where, "not an object")
        if "id" in ann:
            where += f" (id {ann['id']})"
            _check(ann["id"] not in ann_ids, ann_file, where, "duplicate annotation id")
            ann_ids.add(ann["id"])
        _check(
            ann.get("image_id") in image_ids, ann_file, where, f"image_id {ann.get('image_id')!r} is not in 'images'"
        )
        _check(
            ann.get("category_id") in cat_ids,
            ann_file,
            where,
            f"category_id {ann.get('category_id')!r} is not in 'categories'",
        )
        box = ann.get("bbox")
        _check(
            isinstance(box, (list, tuple)) and len(box) == 4 and all(_finite(v) for v in box),
            ann_file,
            where,
            f"'bbox' must be 4 finite numbers [x, y, w, h], got {box!r}",
        )
        _check(
            "area" not in ann or _finite(ann["area"]),
            ann_file,
            where,
            f"'area' must be a finite number, got {ann.get('area')!r}",
        )
        crowd = ann.get("iscrowd", 0)
        _check(crowd in (0, 1), ann_file, where, f"'iscrowd' must be 0 or 1, got {crowd!r}")
    # pycocotools needs annotation ids: number the entries that lack one.
    next_id = max(ann_ids, default=0) + 1
    for ann in data["annotations"]:
        if "id" not in ann:
            ann["id"], next_id = next_id, next_id + 1
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    return data


def coco_from_dict(data: dict):
    """A pycocotools COCO index over an already loaded dict, without its prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode.startswith("I;16") or im.mode == "I":
        # 16-bit grayscale: PIL's convert clips at 255 (a white image); scale 0..65535 instead
        gray = np.asarray(im, dtype=np.float64).clip(0, 65535) / 257.0
        return Image.fromarray(gray.round().astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def load_image(path: str, image_id) -> Image.Image:
    """An RGB image (grayscale, 16-bit grayscale, palette and RGBA images converted), or DataError."""
    try:
        with Image.open(path) as im:
            im.load()
            if min(im.size) < 1:
                raise DataError(f"{path}: empty image {im.size} (image id {image_id})")
            return _to_rgb(im)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found (image id {image_id})") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image (image id {image_id}): {e}") from None


def prepare_target(anns: list, image_id, w: int, h: int, cat_to_label: dict) -> dict:
    """Annotations -> target dict with absolute (x0, y0, x1, y1) boxes: crowds dropped,
    boxes clipped to the image, empty boxes dropped."""
    anns = [a for a in anns if not a.get("iscrowd", 0)]
    boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2].clamp_(min=0, max=w)
    boxes[:, 1::2].clamp_(min=0, max=h)
    keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
    labels = torch.tensor([cat_to_label[a["category_id"]] for a in anns], dtype=torch.int64)
    area = torch.tensor([float(a.get("area", 0.0)) for a in anns], dtype=torch.float32)
    return {
        "boxes": boxes[keep],
        "labels": labels[keep],
        "area": area[keep],
        "iscrowd": torch.zeros(int(keep.sum()), dtype=torch.int64),
        "image_id": torch.tensor([image_id]),
        "orig_size": torch.tensor([h, w]),
        "size": torch.tensor([h, w]),
    }


class CocoDetection(torch.utils.data.Dataset):
    """(image tensor (3, H, W), target) pairs from `img_folder` and `ann_file`."""

    def __init__(self, img_folder: str, ann_file: str, transforms=None):
        self.img_folder, self.ann_file, self.transforms = img_folder, ann_file, transforms
        if not os.path.isdir(img_folder):
            raise DataError(f"{img_folder}: image folder not found")
        self.coco = coco_from_dict(load_coco_json(ann_file))
        self.ids = sorted(self.coco.imgs)
        cat_ids = sorted(self.coco.cats)
        if not cat_ids or cat_ids[-1] <= MAX_IDENTITY_ID:
            self.label_to_category = {c: c for c in cat_ids}
            self.num_classes = (cat_ids[-1] + 1) if cat_ids else 1
        else:
            self.label_to_category = dict(enumerate(cat_ids))
            self.num_classes = len(cat_ids)
        self.category_to_label = {c: label for label, c in self.label_to_category.items()}

    @property
    def category_names(self) -> dict:
        """label -> category name."""
        return {label: self.coco.cats[c].get("name", str(c)) for label, c in self.label_to_category.items()}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        image = load_image(os.path.join(self.img_folder, info["file_name"]), image_id)
        w, h = image.size
        anns = self.coco.imgToAnns.get(image_id, [])
        target = prepare_target(anns, image_id, w, h, self.category_to_label)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def build_coco(
    image_set: str, img_folder: str, ann_file: str, base_size: int = 800, sizes: dict | None = None
) -> CocoDetection:
    return CocoDetection(img_folder, ann_file, make_transforms(image_set, base_size, sizes))


def coco_paths(coco_path: str, image_set: str):
    """The official layout: <root>/{train,val}2017 and annotations/instances_*2017.json."""
    split = {"train": "train2017", "val": "val2017"}[image_set]
    return (os.path.join(coco_path, split), os.path.join(coco_path, "annotations", f"instances_{split}.json"))
