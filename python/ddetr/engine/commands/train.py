"""`ddetr train`: a detector trained on COCO-layout data, or on the synthetic set when no data
is given."""

from __future__ import annotations

import os

from ..build import synthetic_data
from ..options import has_data
from ..train import train
from .arguments import add_data_options, add_model_options, add_train_options

HELP = "train (single process, or under torchrun for DDP)"


def add_arguments(p) -> None:
    add_data_options(p, "train")
    add_train_options(p, "train")
    add_model_options(p, "train")


def run(args) -> None:
    if not has_data(args):
        args.coco_path = synthetic_data(args)
        if os.environ.get("RANK", "0") == "0":
            print(f"no data given: using the synthetic data set in {args.coco_path}", flush=True)
    train(args)
