"""Checks of a data set before training or evaluation: every image file readable (headers
only at the start of a run: seconds, not an epoch later; `ddetr check-data` decodes them
whole), and something to learn from or evaluate against."""

from __future__ import annotations

import os

from PIL import Image

from .coco import CocoDetection, DataError, load_image


def image_problems(ds: CocoDetection, full: bool = False) -> list:
    """One message per image that cannot be used: missing, not an image, empty, of another
    size than the annotation file says (its boxes were drawn on another image), or (with
    `full`) not decodable to the end."""
    problems = []
    for image_id in ds.ids:
        info = ds.coco.imgs[image_id]
        path = os.path.join(ds.img_folder, info["file_name"])
        try:
            if full:
                size = load_image(path, image_id).size
            else:
                with Image.open(path) as im:
                    size = im.size
                if min(size) < 1:
                    problems.append(f"{path}: empty image {size} (image id {image_id})")
                    continue
            said = (info.get("width"), info.get("height"))
            if None not in said and tuple(said) != tuple(size):
                problems.append(
                    f"{path}: is {size[0]}x{size[1]} (width x height), but {ds.ann_file} says "
                    f"{said[0]:g}x{said[1]:g} for image id {image_id}: its boxes were drawn on another image"
                )
        except DataError as e:
            problems.append(str(e))
        except FileNotFoundError:
            problems.append(f"{path}: image file not found (image id {image_id})")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            problems.append(f"{path}: cannot read image (image id {image_id}): {e}")
    return problems


def check_images(ds: CocoDetection) -> None:
    """DataError naming the first unreadable image (by its header) and how many there are."""
    problems = image_problems(ds)
    if problems:
        more = f" (and {len(problems) - 1} more: `ddetr check-data` lists them)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)


def box_counts(ds: CocoDetection) -> dict:
    """How many annotations are usable, how many are crowd (ignored, as officially) and how
    many have no area left (zero width or height, or outside the image), and how many
    images have at least one usable box."""
    counts = dict(images=len(ds.ids), annotations=0, usable=0, crowd=0, empty=0, images_with_boxes=0)
    for image_id in ds.ids:
        info = ds.coco.imgs[image_id]
        w, h = info.get("width"), info.get("height")
        any_usable = False
        for a in ds.coco.imgToAnns.get(image_id, []):
            counts["annotations"] += 1
            x, y, bw, bh = a["bbox"]
            x0, y0, x1, y1 = x, y, x + bw, y + bh
            if isinstance(w, (int, float)) and isinstance(h, (int, float)):
                x0, x1 = max(x0, 0), min(x1, w)
                y0, y1 = max(y0, 0), min(y1, h)
            if a.get("iscrowd", 0):
                counts["crowd"] += 1
            elif x1 <= x0 or y1 <= y0:
                counts["empty"] += 1
            else:
                counts["usable"] += 1
                any_usable = True
        counts["images_with_boxes"] += any_usable
    return counts


def describe(c: dict) -> str:
    return (
        f"{c['images']} image(s), {c['images_with_boxes']} with a usable box; {c['annotations']} annotation(s): "
        f"{c['usable']} usable, {c['crowd']} crowd (ignored), {c['empty']} with no area inside the image"
    )


def require_usable(ds: CocoDetection, split: str) -> dict:
    """DataError when `ds` has no image or no usable box (nothing to learn from or to
    evaluate against); returns the counts (the caller warns when some are unusable)."""
    c = box_counts(ds)
    if c["images"] == 0:
        raise DataError(f"{ds.ann_file}: no images in the {split} set")
    if c["usable"] == 0:
        raise DataError(
            f"{ds.ann_file}: nothing to {'learn from' if split == 'train' else 'evaluate against'}: " + describe(c)
        )
    return c
