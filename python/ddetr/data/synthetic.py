"""A synthetic COCO-format detection data set, deterministic by seed.

Images hold shapes of several classes (circle, square, triangle, ...) of varied size,
colour and aspect, some overlapping, on solid, gradient, striped or noisy backgrounds.
They are written as real PNG files plus an instances JSON in COCO's layout

    root/train2017/*.png   root/val2017/*.png
    root/annotations/instances_train2017.json   instances_val2017.json

so they go through exactly the same loader as COCO. Each image is drawn from its own
generator seeded by (seed, split, index): the same seed gives the same files, and a larger
set starts with the images of a smaller one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..util.files import atomic_write, write_json

SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "diamond", "hexagon")


@dataclass
class SyntheticConfig:
    """The defaults are the data set of `ddetr demo`."""

    num_train: int = 600
    num_val: int = 100
    num_classes: int = 4  # the first num_classes of SHAPES
    min_image_size: int = 128  # each side drawn in [min, max]
    max_image_size: int = 192
    min_objects: int = 1
    max_objects: int = 3
    min_object_frac: float = 0.2  # object size as a fraction of the short side
    max_object_frac: float = 0.5
    max_overlap: float = 0.3  # IoU allowed between two objects' boxes
    seed: int = 0


def _polygon(shape: str, x0, y0, w, h):
    cx, cy = x0 + w / 2, y0 + h / 2
    if shape == "triangle":
        return [(cx, y0), (x0 + w, y0 + h), (x0, y0 + h)]
    if shape == "diamond":
        return [(cx, y0), (x0 + w, cy), (cx, y0 + h), (x0, cy)]
    if shape == "hexagon":
        return [(cx + w / 2 * math.cos(a), cy + h / 2 * math.sin(a)) for a in np.arange(6) * math.pi / 3]
    if shape == "star":
        pts = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + r * w / 2 * math.cos(a), cy + r * h / 2 * math.sin(a)))
        return pts
    if shape == "cross":
        t = 0.18  # half the bar thickness, as a fraction of the size
        return [
            (cx - t * w, y0),
            (cx + t * w, y0),
            (cx + t * w, cy - t * h),
            (x0 + w, cy - t * h),
            (x0 + w, cy + t * h),
            (cx + t * w, cy + t * h),
            (cx + t * w, y0 + h),
            (cx - t * w, y0 + h),
            (cx - t * w, cy + t * h),
            (x0, cy + t * h),
            (x0, cy - t * h),
            (cx - t * w, cy - t * h),
        ]
    raise ValueError(shape)


def draw_shape_mask(shape: str, size, box) -> Image.Image:
    """An 'L' mask of the image size with the shape filling `box` (x0, y0, w, h)."""
    mask = Image.new("L", size, 0)
    d = ImageDraw.Draw(mask)
    x0, y0, w, h = box
    x1, y1 = x0 + w - 1, y0 + h - 1
    if shape == "circle":
        d.ellipse([x0, y0, x1, y1], fill=255)
    elif shape == "square":
        d.rectangle([x0, y0, x1, y1], fill=255)
    elif shape == "ring":
        d.ellipse([x0, y0, x1, y1], fill=255)
        t = 0.25
        d.ellipse([x0 + t * w, y0 + t * h, x1 - t * w, y1 - t * h], fill=0)
    else:
        d.polygon(_polygon(shape, x0, y0, w, h), fill=255)
    return mask


def _colour(rng, avoid=None):
    """A saturated colour whose luminance differs clearly from `avoid`'s."""
    for _ in range(50):
        c = rng.integers(0, 256, 3)
        if avoid is None or abs(_lum(c) - _lum(avoid)) > 70:
            return c
    return 255 - np.asarray(avoid)


def _lum(c):
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _background(rng, w, h):
    kind = rng.integers(4)
    base = rng.integers(0, 256, 3)
    if kind == 0:  # solid
        img = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
    elif kind == 1:  # linear gradient between two colours
        other = np.clip(base + rng.integers(-80, 81, 3), 0, 255)
        t = np.linspace(0, 1, w if rng.random() < 0.5 else h)
        ramp = base[None] * (1 - t[:, None]) + other[None] * t[:, None]
        img = (
            np.broadcast_to(ramp[None], (h, w, 3)) if len(t) == w else np.broadcast_to(ramp[:, None], (h, w, 3))
        ).astype(np.float32)
    elif kind == 2:  # stripes
        other = np.clip(base + rng.integers(-50, 51, 3), 0, 255)
        period = int(rng.integers(6, 20))
        stripe = ((np.arange(w)[None, :] + np.arange(h)[:, None]) // period) % 2
        img = np.where(stripe[..., None] == 1, other, base).astype(np.float32)
    else:  # noise
        img = base + rng.normal(0, 20, (h, w, 3))
    return np.clip(img, 0, 255), base


def _iou(a, b):
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def render_image(cfg: SyntheticConfig, split: int, index: int):
    """(PIL image, [(class index, [x, y, w, h], area), ...]) for one image."""
    rng = np.random.default_rng([cfg.seed, split, index])
    w = int(rng.integers(cfg.min_image_size, cfg.max_image_size + 1))
    h = int(rng.integers(cfg.min_image_size, cfg.max_image_size + 1))
    img, bg = _background(rng, w, h)
    objects = []
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        cls = int(rng.integers(cfg.num_classes))
        for _try in range(30):
            s = rng.uniform(cfg.min_object_frac, cfg.max_object_frac) * min(w, h)
            aspect = math.exp(rng.uniform(-0.3, 0.3))
            bw, bh = max(4, int(s * aspect)), max(4, int(s / aspect))
            if bw >= w or bh >= h:
                continue
            x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            if all(_iou((x0, y0, bw, bh), o[1]) <= cfg.max_overlap for o in objects):
                break
        else:
            continue
        mask = draw_shape_mask(SHAPES[cls], (w, h), (x0, y0, bw, bh))
        m = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
        colour = _colour(rng, bg)
        img = img * (1 - m) + colour * m
        # the tight box of the drawn pixels, not the requested one: what a model can see
        bx0, by0, bx1, by1 = mask.getbbox()
        objects.append((cls, [bx0, by0, bx1 - bx0, by1 - by0], float(m.sum())))
    return Image.fromarray(img.astype(np.uint8)), objects


def _write_split(root: str, cfg: SyntheticConfig, split_name: str, split: int, n: int) -> str:
    folder = os.path.join(root, f"{split_name}2017")
    os.makedirs(folder, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        image, objects = render_image(cfg, split, i)
        name = f"{i:06d}.png"
        # every file appears whole (util.files), so processes started together by torchrun
        # can all write the same set, and none ever reads a half-written image
        atomic_write(os.path.join(folder, name), lambda f, image=image: image.save(f, format="PNG"))
        images.append({"id": i + 1, "file_name": name, "width": image.width, "height": image.height})
        for cls, box, area in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": cls + 1,
                    "bbox": box,
                    "area": area,
                    "iscrowd": 0,
                }
            )
    data = {
        "info": {"description": "ddetr synthetic shapes", "config": asdict(cfg)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c + 1, "name": SHAPES[c], "supercategory": "shape"} for c in range(cfg.num_classes)],
    }
    ann_dir = os.path.join(root, "annotations")
    os.makedirs(ann_dir, exist_ok=True)
    path = os.path.join(ann_dir, f"instances_{split_name}2017.json")
    write_json(path, data, indent=None)  # the JSON appears last and whole: its presence means the split is done
    return path


def _existing_config(root: str):
    try:
        paths = [os.path.join(root, "annotations", f"instances_{s}2017.json") for s in ("train", "val")]
        configs = []
        for p in paths:
            with open(p, encoding="utf-8") as f:
                configs.append(json.load(f)["info"]["config"])
        return configs[0] if configs[0] == configs[1] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def make_synthetic(root: str, cfg: SyntheticConfig | None = None, **overrides) -> str:
    """Write the data set under `root` (skipped when it is already there with the same
    configuration) and return `root`."""
    cfg = cfg or SyntheticConfig()
    if overrides:
        cfg = SyntheticConfig(**{**asdict(cfg), **overrides})
    if not 1 <= cfg.num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in 1..{len(SHAPES)}, got {cfg.num_classes}")
    if _existing_config(root) == asdict(cfg):
        return root
    _write_split(root, cfg, "train", 0, cfg.num_train)
    _write_split(root, cfg, "val", 1, cfg.num_val)
    return root
