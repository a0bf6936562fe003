"""`ddetr demo`: the synthetic shapes data set, a small Deformable DETR trained on the CPU
(the `demo` preset of `options.py`), COCO evaluation, and pictures.

It writes, under --output-dir (default ddetr-demo/): data/ (the data set), checkpoint.pth,
log.txt, metrics.json, training_curve.png (loss and AP per epoch), predictions/ (the first
--num-pictures validation images with their detections and the sampling points of the best
queries, enlarged to 640 px) and demo_summary.json. With the preset's 24 epochs it takes
about 10 minutes on two idle CPU cores and reaches an AP50 around 0.7.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

from ..build import synthetic_data
from ..checkpoint import CHECKPOINT
from ..predict import predict
from ..train import CURVE, train
from .arguments import add_model_options, add_train_options, default_help

HELP = "synthetic data, a small model trained on the CPU, metrics and pictures"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_train_options(p, "demo")
    add_model_options(p, "demo")
    p.add_argument("--num-train", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--num-val", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--num-pictures", type=int, default=None, help=f"prediction pictures to draw; {default_help('num_pictures')}"
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help=f"short side of the images the model sees; {default_help('image_size', 'demo')}",
    )


def run(args) -> dict:
    """Runs the demo with resolved options `args`; returns the summary it writes."""
    t0 = time.time()
    out = args.output_dir
    args.coco_path = synthetic_data(args)
    n_train = len(os.listdir(os.path.join(args.coco_path, "train2017")))
    n_val = len(os.listdir(os.path.join(args.coco_path, "val2017")))
    print(f"synthetic data: {n_train} training and {n_val} validation images in {args.coco_path}", flush=True)
    metrics = train(args)
    val_images = sorted(glob.glob(os.path.join(args.coco_path, "val2017", "*.png")))[: args.num_pictures]
    pics = os.path.join(out, "predictions")
    predict(
        val_images,
        os.path.join(out, CHECKPOINT),
        pics,
        threshold=args.threshold,
        device=args.device,
        show_sampling_points=True,
        top_queries=args.top_queries,
        quiet=True,
    )
    elapsed = time.time() - t0
    summary = {
        "AP": metrics.get("AP"),
        "AP50": metrics.get("AP50"),
        "seconds": round(elapsed, 1),
        "metrics": os.path.join(out, "metrics.json"),
        "checkpoint": os.path.join(out, CHECKPOINT),
        "training_curve": os.path.join(out, CURVE),
        "predictions": pics,
    }
    with open(os.path.join(out, "demo_summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print(
        f"demo done in {elapsed / 60:.1f} min: AP {summary['AP']:.3f}, AP50 {summary['AP50']:.3f}\n"
        f"  metrics         {summary['metrics']}\n  checkpoint      {summary['checkpoint']}\n"
        f"  training curve  {summary['training_curve']}\n  pictures        {pics}/",
        flush=True,
    )
    return summary
