"""Detection transforms on (PIL image, target) pairs, as in the official recipe.

Targets carry `boxes` as absolute (x0, y0, x1, y1) until `Normalize`, which turns them
into (cx, cy, w, h) divided by the image size: the form the model and the loss expect.
Randomness comes from Python's `random`, which DataLoader seeds per worker and the
training loop reseeds per epoch, so runs are reproducible.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

from ..util.box_ops import box_xyxy_to_cxcywh

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _keep(target: dict, keep: torch.Tensor) -> None:
    for k in ("boxes", "labels", "area", "iscrowd"):
        if k in target:
            target[k] = target[k][keep]


def hflip(image: Image.Image, target: dict):
    w, _ = image.size
    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    target = dict(target)
    if "boxes" in target:
        b = target["boxes"]
        target["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], -1)
    return image, target


def crop(image: Image.Image, target: dict, region):
    """Crop (top, left, height, width); boxes are clipped and those left empty dropped."""
    i, j, h, w = region
    image = image.crop((j, i, j + w, i + h))
    target = dict(target)
    target["size"] = torch.tensor([h, w])
    if "boxes" in target:
        b = target["boxes"] - torch.tensor([j, i, j, i], dtype=torch.float32)
        b = torch.min(b.view(-1, 2, 2), torch.tensor([w, h], dtype=torch.float32)).clamp(min=0)
        target["area"] = (b[:, 1, :] - b[:, 0, :]).prod(1)
        target["boxes"] = b.view(-1, 4)
        _keep(target, (b[:, 1, :] > b[:, 0, :]).all(1))
    return image, target


def resize_size(image_size, size: int, max_size: int | None = None):
    """(h, w) with the short side `size`, shrunk so that the long side is <= max_size."""
    w, h = image_size
    if max_size is not None:
        short, long = float(min(w, h)), float(max(w, h))
        if long / short * size > max_size:
            # at least one pixel: a very long, thin image (say 3000 x 1) would round to 0
            size = max(1, int(round(max_size * short / long)))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def resize(image: Image.Image, target: dict, size: int, max_size: int | None = None):
    oh, ow = resize_size(image.size, size, max_size)
    rw, rh = ow / image.size[0], oh / image.size[1]
    image = image.resize((ow, oh), Image.Resampling.BILINEAR)
    target = dict(target)
    target["size"] = torch.tensor([oh, ow])
    if "boxes" in target:
        target["boxes"] = target["boxes"] * torch.tensor([rw, rh, rw, rh], dtype=torch.float32)
    if "area" in target:
        target["area"] = target["area"] * (rw * rh)
    return image, target


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, target):
        return hflip(image, target) if random.random() < self.p else (image, target)


class RandomResize:
    """Short side drawn from `sizes`, long side capped at `max_size`."""

    def __init__(self, sizes, max_size: int | None = None):
        self.sizes, self.max_size = list(sizes), max_size

    def __call__(self, image, target):
        return resize(image, target, random.choice(self.sizes), self.max_size)


class RandomSizeCrop:
    """A crop of random size in [min_size, max_size] (bounded by the image) at a random place."""

    def __init__(self, min_size: int, max_size: int):
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, image, target):
        iw, ih = image.size
        w = random.randint(min(self.min_size, iw), min(iw, self.max_size))
        h = random.randint(min(self.min_size, ih), min(ih, self.max_size))
        i, j = random.randint(0, ih - h), random.randint(0, iw - w)
        return crop(image, target, (i, j, h, w))


class RandomSelect:
    """`first` with probability p, else `second`."""

    def __init__(self, first, second, p: float = 0.5):
        self.first, self.second, self.p = first, second, p

    def __call__(self, image, target):
        return self.first(image, target) if random.random() < self.p else self.second(image, target)


class Normalize:
    """PIL image -> float tensor (3, H, W) normalised; boxes -> normalised (cx, cy, w, h)."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, image, target):
        x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        x = (x.float() / 255.0 - self.mean) / self.std
        target = dict(target)
        if "boxes" in target:
            h, w = x.shape[-2:]
            target["boxes"] = box_xyxy_to_cxcywh(target["boxes"]) / torch.tensor([w, h, w, h], dtype=torch.float32)
        return x, target


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


def official_sizes(base: int = 800) -> dict:
    """The official sizes for images of short side `base` (800 for COCO), scaled down
    proportionally for smaller data: training scales 480..800 step 32, long side <= 1333,
    resize 400/500/600 then crop 384..600, validation 800 / 1333."""
    s = base / 800.0
    scales = sorted({max(1, int(round(x * s))) for x in range(480, 801, 32)})
    return dict(
        scales=scales,
        max_size=int(round(1333 * s)),
        crop_resize=[int(round(x * s)) for x in (400, 500, 600)],
        crop_range=(int(round(384 * s)), int(round(600 * s))),
        val_size=int(round(800 * s)),
        val_max_size=int(round(1333 * s)),
    )


def make_transforms(image_set: str, base_size: int = 800, sizes: dict | None = None):
    """The official training (flip, multi-scale resize or resize + crop + resize) or
    validation (single resize) pipeline, ending in normalisation."""
    z = official_sizes(base_size) if sizes is None else sizes
    if image_set == "train":
        return Compose(
            [
                RandomHorizontalFlip(),
                RandomSelect(
                    RandomResize(z["scales"], max_size=z["max_size"]),
                    Compose(
                        [
                            RandomResize(z["crop_resize"]),
                            RandomSizeCrop(*z["crop_range"]),
                            RandomResize(z["scales"], max_size=z["max_size"]),
                        ]
                    ),
                ),
                Normalize(),
            ]
        )
    if image_set in ("val", "test"):
        return Compose([RandomResize([z["val_size"]], max_size=z["val_max_size"]), Normalize()])
    raise ValueError(f"unknown image set {image_set!r}: expected 'train' or 'val'")
