"""`ddetr predict`: detections on image files, as JSON and annotated pictures."""

from __future__ import annotations

from ..predict import predict
from .arguments import add_inference_options, default_help

HELP = "detect objects in images: JSON and annotated PNGs"


def add_arguments(p) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--output-dir", default=None, help=default_help("output_dir", "predict"))
    p.add_argument("--threshold", type=float, default=None, help=default_help("threshold"))
    p.add_argument("--image-size", type=int, default=None, help="default: the training image size")
    p.add_argument("--device", default=None, help=default_help("device", "predict"))
    p.add_argument(
        "--show-sampling-points",
        action="store_true",
        default=None,
        help="overlay the decoder sampling locations of the top detections' queries",
    )
    p.add_argument("--top-queries", type=int, default=None, help=default_help("top_queries"))
    add_inference_options(p, "predict")


def run(args) -> None:
    predict(
        args.images,
        args.checkpoint,
        args.output_dir,
        threshold=args.threshold,
        device=args.device,
        image_size=args.image_size,
        show_sampling_points=args.show_sampling_points,
        top_queries=args.top_queries,
        dtype=args.dtype,
        compile=args.compile,
    )
