"""The `ddetr` command: demo | train | eval | predict | export | bench.

Options left unset fall back to the preset (`--preset demo`, and always for `ddetr demo`),
then to the official Deformable DETR values.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

TRAIN_DEFAULTS = dict(
    output_dir="output", epochs=50, lr_drop=40, batch_size=2, lr=2e-4, lr_linear_proj_mult=0.1,
    weight_decay=1e-4, clip_max_norm=0.1, seed=42, num_workers=2, device="auto", amp=False,
    resume=None, eval_every=1, image_size=800, print_freq=50, max_steps=None, quiet=False,
    verbose=False, find_unused_parameters=False, train_full_backbone=False, num_pictures=6,
)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    from .models import DEFAULTS

    g = p.add_argument_group("model (official names; default: the official values)")
    for name, default in DEFAULTS.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif name in ("num_classes",):
            g.add_argument(flag, type=int, default=None, help="default: from the data set")
        elif name == "backbone_weights":
            g.add_argument(flag, default=None, help="torchvision ResNet state_dict (.pth) to start from")
        else:
            g.add_argument(flag, type=type(default), default=None, help=f"default {default}")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (default: the built-in synthetic data set)")
    g.add_argument("--coco-path", help="COCO layout: train2017/, val2017/, annotations/instances_*.json")
    g.add_argument("--train-images", help="image folder of the training set")
    g.add_argument("--train-ann", help="instances JSON of the training set")
    g.add_argument("--val-images", help="image folder of the validation set")
    g.add_argument("--val-ann", help="instances JSON of the validation set")
    g.add_argument("--image-size", type=int, default=None,
                   help="short side for validation (800 for COCO); training scales and crops "
                        "are the official ones scaled by image-size/800")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    a = g.add_argument
    a("--preset", choices=["official", "demo"], default="official")
    a("--output-dir", default=None, help="checkpoint.pth, log.txt, metrics.json go here")
    a("--epochs", type=int, default=None)
    a("--lr-drop", type=int, default=None, help="epochs between lr x0.1 steps")
    a("--batch-size", type=int, default=None, help="per process")
    a("--lr", type=float, default=None)
    a("--lr-linear-proj-mult", type=float, default=None)
    a("--weight-decay", type=float, default=None)
    a("--clip-max-norm", type=float, default=None)
    a("--seed", type=int, default=None)
    a("--num-workers", type=int, default=None)
    a("--device", default=None, help="auto (default), cpu, cuda")
    a("--amp", action=argparse.BooleanOptionalAction, default=None, help="bfloat16 autocast on CUDA")
    a("--resume", default=None, help="a checkpoint to continue from, or 'auto' (output-dir/checkpoint.pth if any)")
    a("--eval-every", type=int, default=None, help="evaluate every N epochs (and after the last); 0: never")
    a("--print-freq", type=int, default=None)
    a("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    a("--quiet", action="store_true", default=None)
    a("--verbose", action="store_true", default=None, help="print COCOeval's full summary")
    a("--find-unused-parameters", action=argparse.BooleanOptionalAction, default=None)
    a("--train-full-backbone", action=argparse.BooleanOptionalAction, default=None,
      help="also train the stem and layer1 (for random-init backbones)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddetr", description="Deformable DETR: train, evaluate, predict.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="synthetic data, a small model trained on the CPU, metrics and pictures")
    _add_train_options(demo)
    _add_model_options(demo)
    demo.add_argument("--num-train", type=int, default=None, help=argparse.SUPPRESS)
    demo.add_argument("--num-val", type=int, default=None, help=argparse.SUPPRESS)
    demo.add_argument("--num-pictures", type=int, default=None, help="prediction pictures to draw")
    demo.add_argument("--image-size", type=int, default=None, help="short side of the images the model sees")

    train = sub.add_parser("train", help="train (single process, or under torchrun for DDP)")
    _add_data_options(train)
    _add_train_options(train)
    _add_model_options(train)

    ev = sub.add_parser("eval", help="evaluate a checkpoint; writes metrics.json")
    ev.add_argument("--checkpoint", required=True)
    _add_data_options(ev)
    ev.add_argument("--output-dir", default=".")
    ev.add_argument("--batch-size", type=int, default=2)
    ev.add_argument("--num-workers", type=int, default=2)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False)
    ev.add_argument("--num-select", type=int, default=None)
    ev.add_argument("--print-freq", type=int, default=50)
    ev.add_argument("--quiet", action="store_true")

    pr = sub.add_parser("predict", help="detect objects in images: JSON and annotated PNGs")
    pr.add_argument("images", nargs="+", metavar="IMAGE")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--output-dir", default="predictions")
    pr.add_argument("--threshold", type=float, default=0.3)
    pr.add_argument("--image-size", type=int, default=None, help="default: the training image size")
    pr.add_argument("--device", default="cpu")
    pr.add_argument("--show-sampling-points", action="store_true",
                    help="overlay the decoder sampling locations of the top detections' queries")
    pr.add_argument("--top-queries", type=int, default=3)

    from .export.cli import add_parser as add_export_parser
    add_export_parser(sub)

    sub.add_parser("bench", help="run the benchmark suite (python -m pytest benchmarks ARGS...)", add_help=False)
    return parser


def _fill_defaults(args, preset: dict) -> None:
    from .models import DEFAULTS

    for source in (preset, TRAIN_DEFAULTS, DEFAULTS):
        for k, v in source.items():
            if getattr(args, k, None) is None and k != "num_classes":
                setattr(args, k, v)
    for k in ("coco_path", "train_images", "train_ann", "val_images", "val_ann"):
        if not hasattr(args, k):
            setattr(args, k, None)
    if getattr(args, "num_classes", None) is None:
        args.num_classes = None  # from the data


def _repo_root() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.dirname(os.path.dirname(here)), os.getcwd()):
        if os.path.isdir(os.path.join(cand, "benchmarks")):
            return cand
    return None


def bench(argv: list) -> int:
    root = _repo_root()
    if root is None:
        print("ddetr bench: the benchmarks/ folder was not found (run it from a source checkout)", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", "pytest", "benchmarks", *argv], cwd=root)


def main(argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":  # everything after it goes to pytest untouched
        return bench(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "export":
        from .export.cli import run as run_export
        return run_export(args)
    from .data.coco import DataError
    from .engine.checkpoint import CheckpointError
    from .engine.train import NonFiniteLossError

    try:
        if args.command == "demo":
            from .engine.demo import DEMO_PRESET, run_demo

            _fill_defaults(args, DEMO_PRESET)
            if args.output_dir == TRAIN_DEFAULTS["output_dir"]:
                args.output_dir = "ddetr-demo"
            if args.device == "auto":
                args.device = "cpu"  # the demo is meant for the CPU
            run_demo(args)
        elif args.command == "train":
            from .engine.demo import DEMO_DATA, DEMO_PRESET
            from .engine.train import train

            _fill_defaults(args, DEMO_PRESET if args.preset == "demo" else {})
            if not (args.coco_path or args.train_images or args.val_images):
                from .data.synthetic import make_synthetic

                args.coco_path = make_synthetic(os.path.join(args.output_dir, "data"), **DEMO_DATA)
                if "--image-size" not in " ".join(argv):
                    args.image_size = DEMO_PRESET["image_size"]
                if os.environ.get("RANK", "0") == "0":
                    print(f"no data given: using the synthetic data set in {args.coco_path}", flush=True)
            train(args)
        elif args.command == "eval":
            from .engine.train import run_eval

            if not (args.coco_path or args.val_images):
                raise SystemExit("ddetr eval: give --coco-path DIR or --val-images DIR --val-ann FILE")
            if args.image_size is None:
                from .engine.checkpoint import checkpoint_args, load_checkpoint

                args.image_size = checkpoint_args(load_checkpoint(args.checkpoint)).get("image_size", 800)
            run_eval(args)
        elif args.command == "predict":
            from .engine.predict import predict

            predict(args.images, args.checkpoint, args.output_dir, args.threshold, args.device,
                    args.image_size, args.show_sampling_points, args.top_queries)
    except (DataError, CheckpointError, NonFiniteLossError) as e:
        print(f"ddetr {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nddetr {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
