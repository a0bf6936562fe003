"""`ddetr check-data`: every image decoded and every annotation checked, in seconds per
thousand images, before a run finds a bad file an epoch in."""

from __future__ import annotations

from ...data.check import box_counts, describe, image_problems
from ...data.coco import DataError
from ..build import build_datasets
from .arguments import add_data_options

HELP = "read every image and annotation of a data set; report what is unusable"


def add_arguments(p) -> None:
    add_data_options(p, "check-data")


def run(args) -> None:
    """Prints each set's counts and every unusable image; DataError when anything is unusable."""
    need_train = bool(args.coco_path or args.train_images or args.train_ann)
    train, val = build_datasets(args, need_train=need_train)
    problems, nothing = [], []
    for split, ds in (("train", train), ("val", val)):
        if ds is None:
            continue
        counts = box_counts(ds)
        print(f"{split}: {ds.ann_file}: {describe(counts)}", flush=True)
        if counts["usable"] == 0:
            nothing.append(f"{ds.ann_file}: no usable box")
        found = image_problems(ds, full=True)
        for p in found:
            print(f"  {p}", flush=True)
        problems += found
    if problems or nothing:
        what = [f"{len(problems)} unreadable image(s) (listed above)"] if problems else []
        raise DataError("; ".join(what + nothing))
