"""The `ddetr` command: demo | train | eval | predict | check-data | convert | export | bench.

Every option defaults to None here; `ddetr.engine.options.resolve` fills what was not given,
once, from the preset, the command's defaults and the one table of defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import warnings

from .engine.build import synthetic_data
from .engine.check_data import run_check_data
from .engine.convert import run_convert
from .engine.demo import run_demo
from .engine.evaluate import run_eval
from .engine.options import COMMAND_DEFAULTS, DEFAULTS, PRESETS, has_data, resolve, validate
from .engine.predict import predict
from .engine.train import train
from .errors import UserError, is_worker_error, one_line
from .export.cli import add_parser as add_export_parser
from .export.cli import run as run_export
from .models import DEFAULTS as MODEL_DEFAULTS


def _default(name: str, command: str | None = None) -> str:
    """The help text's default, as `resolve` will fill it (`ddetr demo` always uses its preset)."""
    table = {**DEFAULTS, **COMMAND_DEFAULTS.get(command, {}), **(PRESETS["demo"] if command == "demo" else {})}
    return f"default {table[name]}"


def _add_model_options(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("model (official names; default: the official values)")
    for name, default in MODEL_DEFAULTS.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=_default(name, command))
        elif name == "num_classes":
            g.add_argument(flag, type=int, default=None, help="default: from the data set")
        elif name == "backbone_weights":
            g.add_argument(flag, default=None, help="torchvision ResNet state_dict (.pth) to start from")
        else:
            g.add_argument(flag, type=type(default), default=None, help=_default(name, command))


def _add_data_options(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("data" + (" (default: the built-in synthetic data set)" if command == "train" else ""))
    g.add_argument("--coco-path", help="COCO layout: train2017/, val2017/, annotations/instances_*.json")
    g.add_argument("--train-images", help="image folder of the training set")
    g.add_argument("--train-ann", help="instances JSON of the training set")
    g.add_argument("--val-images", help="image folder of the validation set")
    g.add_argument("--val-ann", help="instances JSON of the validation set")
    size = "default: as the checkpoint was trained" if command == "eval" else _default("image_size")
    g.add_argument(
        "--image-size",
        type=int,
        default=None,
        help=f"short side for validation (800 for COCO); training scales and crops are the official "
        f"ones scaled by image-size/800; {size}",
    )


def _add_train_options(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("training")

    def a(flag, help="", **kw):
        name = flag[2:].replace("-", "_")
        g.add_argument(flag, default=None, help=f"{help}{'; ' if help else ''}{_default(name, command)}", **kw)

    g.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="defaults for options not given: the official recipe or the demo's small CPU model",
    )
    a("--output-dir", "checkpoint.pth, log.txt, metrics.json, training_curve.png go here")
    a("--epochs", type=int)
    a("--lr-drop", "epochs between lr x0.1 steps", type=int)
    a("--batch-size", "per process", type=int)
    a("--lr", type=float)
    a("--lr-linear-proj-mult", type=float)
    a("--weight-decay", type=float)
    a("--clip-max-norm", type=float)
    a("--seed", type=int)
    a("--num-workers", type=int)
    a("--device", "auto, cpu, cuda")
    a(
        "--amp",
        "bfloat16 autocast on the CPU and CUDA (weights, gradients and losses stay float32); "
        "faster where the hardware computes in bfloat16 natively (AVX512-BF16, AMX, tensor cores)",
        action=argparse.BooleanOptionalAction,
    )
    if command == "train":
        a(
            "--compile",
            "torch.compile (inductor) the model and the loss math, with dynamic shapes; the first "
            "step compiles (minutes on a CPU), and so, with torch 2.13, does each new padded batch "
            "size, up to torch._dynamo's recompile limit (8), after which new sizes run eagerly",
            action=argparse.BooleanOptionalAction,
        )
    a("--resume", "a checkpoint to continue from, or 'auto' (output-dir/checkpoint.pth if any)")
    a("--overwrite", "start afresh even where --output-dir holds a checkpoint (replaced)", action="store_true")
    if command == "train":
        a(
            "--pretrained",
            "weights to fine-tune from, either layout (official or ddetr .pth, HF folder, .bin, .safetensors): "
            "model options not given are the weights', class heads are re-initialised when the class count "
            "differs; a checkpoint found by --resume wins",
        )
    a("--eval-every", "evaluate every N epochs (and after the last); 0: never", type=int)
    a("--print-freq", type=int)
    g.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    a("--quiet", action="store_true")
    a("--verbose", "print COCOeval's full summary and the libraries' warnings", action="store_true")
    a("--find-unused-parameters", action=argparse.BooleanOptionalAction)
    a(
        "--train-full-backbone",
        "also train the stem and layer1 (for random-init backbones)",
        action=argparse.BooleanOptionalAction,
    )


def _add_inference_options(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="what the model computes in (sampling locations, boxes and scores stay float32); "
        + _default("dtype", command),
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the model (minutes on a CPU, then faster); default: auto, when the images "
        "to run are expected to save more time than compiling costs",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddetr", description="Deformable DETR: train, evaluate, predict.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="synthetic data, a small model trained on the CPU, metrics and pictures")
    _add_train_options(demo, "demo")
    _add_model_options(demo, "demo")
    demo.add_argument("--num-train", type=int, default=None, help=argparse.SUPPRESS)
    demo.add_argument("--num-val", type=int, default=None, help=argparse.SUPPRESS)
    demo.add_argument(
        "--num-pictures", type=int, default=None, help=f"prediction pictures to draw; {_default('num_pictures')}"
    )
    demo.add_argument(
        "--image-size",
        type=int,
        default=None,
        help=f"short side of the images the model sees; {_default('image_size', 'demo')}",
    )

    train = sub.add_parser("train", help="train (single process, or under torchrun for DDP)")
    _add_data_options(train, "train")
    _add_train_options(train, "train")
    _add_model_options(train, "train")

    ev = sub.add_parser("eval", help="evaluate a checkpoint; writes metrics.json")
    ev.add_argument("--checkpoint", required=True)
    _add_data_options(ev, "eval")
    ev.add_argument("--output-dir", default=None, help=_default("output_dir", "eval"))
    ev.add_argument("--batch-size", type=int, default=None, help=_default("batch_size"))
    ev.add_argument("--num-workers", type=int, default=None, help=_default("num_workers"))
    ev.add_argument("--device", default=None, help=_default("device"))
    _add_inference_options(ev, "eval")
    ev.add_argument("--amp", action="store_true", default=None, help="the same as --dtype bfloat16")
    ev.add_argument("--num-select", type=int, default=None, help="detections kept per image; default: as trained")
    ev.add_argument("--print-freq", type=int, default=None, help=_default("print_freq"))
    ev.add_argument("--quiet", action="store_true", default=None)

    pr = sub.add_parser("predict", help="detect objects in images: JSON and annotated PNGs")
    pr.add_argument("images", nargs="+", metavar="IMAGE")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--output-dir", default=None, help=_default("output_dir", "predict"))
    pr.add_argument("--threshold", type=float, default=None, help=_default("threshold"))
    pr.add_argument("--image-size", type=int, default=None, help="default: the training image size")
    pr.add_argument("--device", default=None, help=_default("device", "predict"))
    pr.add_argument(
        "--show-sampling-points",
        action="store_true",
        default=None,
        help="overlay the decoder sampling locations of the top detections' queries",
    )
    pr.add_argument("--top-queries", type=int, default=None, help=_default("top_queries"))
    _add_inference_options(pr, "predict")

    cd = sub.add_parser("check-data", help="read every image and annotation of a data set; report what is unusable")
    _add_data_options(cd, "check-data")

    cv = sub.add_parser("convert", help="convert weights between the official and the HF layout")
    cv.add_argument("src", metavar="SRC", help="weights in either layout: .pth, .bin, .safetensors or an HF folder")
    cv.add_argument("dst", metavar="DST", help="--to hf: a folder; --to official: a .pth or .safetensors file")
    cv.add_argument("--to", required=True, choices=("official", "hf"))
    cv.add_argument(
        "--backbone",
        dest="hf_backbone",
        choices=("transformers", "timm"),
        default=None,
        help="--to hf: transformers' own ResNet (loads without timm) or timm's names, as hub files (needs timm); "
        + _default("hf_backbone"),
    )
    cv.add_argument("--overwrite", action="store_true", default=None, help="replace files already at DST")

    add_export_parser(sub)
    for p in (ev, pr, cd, cv):
        p.add_argument("--verbose", action="store_true", default=None, help="show the libraries' warnings")

    sub.add_parser("bench", help="run the benchmark suite (python -m pytest benchmarks ARGS...)", add_help=False)
    return parser


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


def _error(command: str, e: BaseException) -> int:
    print(f"ddetr {command}: error: {one_line(e)}", file=sys.stderr)
    return 1


@contextlib.contextmanager
def _library_warnings(shown: bool):
    """Library warnings (torch, the ONNX exporter, PIL, ...) hidden unless --verbose: a
    command prints its own lines, and a failing one its one error line."""
    if shown:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def main(argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":  # everything after it goes to pytest untouched
        return bench(argv[1:])
    args = build_parser().parse_args(argv)
    with _library_warnings(shown=bool(getattr(args, "verbose", False))):
        return _run(args)


def _run(args) -> int:
    no_data = args.command == "train" and not has_data(args)
    try:
        args = resolve(args.command, args)  # reads --pretrained's options
        validate(args.command, args)
        if args.command == "demo":
            run_demo(args)
        elif args.command == "train":
            if no_data:
                args.coco_path = synthetic_data(args)
                if os.environ.get("RANK", "0") == "0":
                    print(f"no data given: using the synthetic data set in {args.coco_path}", flush=True)
            train(args)
        elif args.command == "eval":
            run_eval(args)
        elif args.command == "check-data":
            run_check_data(args)
        elif args.command == "predict":
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
        elif args.command == "convert":
            print(run_convert(args.src, args.dst, args.to, args.hf_backbone, args.overwrite))
        elif args.command == "export":
            run_export(args)
    except (UserError, OSError) as e:
        # what the user can fix (OSError: a file or folder the system refused), as one line
        return _error(args.command, e)
    except Exception as e:
        if not is_worker_error(e):  # anything else is a bug: its traceback helps
            raise
        return _error(args.command, e)
    except KeyboardInterrupt:
        print(f"\nddetr {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
