"""`ddetr eval`: a checkpoint evaluated on a validation set (COCO metrics, metrics.json)."""

from __future__ import annotations

import argparse

from ..evaluate import run_eval
from .arguments import add_data_options, add_inference_options, default_help

HELP = "evaluate a checkpoint; writes metrics.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True)
    add_data_options(p, "eval")
    p.add_argument("--output-dir", default=None, help=default_help("output_dir", "eval"))
    p.add_argument("--batch-size", type=int, default=None, help=default_help("batch_size"))
    p.add_argument("--num-workers", type=int, default=None, help=default_help("num_workers"))
    p.add_argument("--device", default=None, help=default_help("device"))
    add_inference_options(p, "eval")
    p.add_argument("--amp", action="store_true", default=None, help="the same as --dtype bfloat16")
    p.add_argument("--num-select", type=int, default=None, help="detections kept per image; default: as trained")
    p.add_argument("--print-freq", type=int, default=None, help=default_help("print_freq"))
    p.add_argument("--quiet", action="store_true", default=None)


def run(args) -> None:
    run_eval(args)
