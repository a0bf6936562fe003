"""`ddetr export`: a checkpoint to an ONNX file or an AOTInductor package. The model options
come from the checkpoint's `args` (and the number of classes from its class head), as for
`ddetr eval` and `ddetr predict`."""

from __future__ import annotations

from ...export import DEFAULT_OPSET, ExportError, to_aoti, to_onnx
from ...weights import model_from_checkpoint

HELP = "export a checkpoint to ONNX (onnxruntime, OpenVINO, TensorRT) or AOTInductor"


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", choices=["onnx", "aoti"], default="onnx")
    p.add_argument("--output", required=True, help="model.onnx, or model.pt2 for aoti")
    p.add_argument(
        "--attention",
        choices=["portable", "tensorrt"],
        default="portable",
        help="onnx: GridSample (any runtime) or TensorRT's MultiscaleDeformableAttnPlugin_TRT",
    )
    # its own dest: the options table's image_size is one int, checked as such
    p.add_argument(
        "--image-size",
        dest="trace_size",
        type=int,
        nargs="+",
        default=[800],
        metavar="N",
        help="example size traced (H or H W); with --static, the fixed input size",
    )
    p.add_argument("--static", action="store_true", help="fixed batch 1 and image size instead of dynamic")
    p.add_argument("--opset", type=int, default=None, help="onnx opset (default 18)")
    p.add_argument(
        "--postprocess",
        action="store_true",
        help="also output the top --num-select scores, labels and boxes (takes target_sizes)",
    )
    p.add_argument("--num-select", type=int, default=None, help="default: from the checkpoint (100)")


def run(args) -> None:
    """Exports --checkpoint (either weights layout; model options from it). Bad input raises
    ExportError or CheckpointError, which `ddetr`'s main prints as one line."""
    if len(args.trace_size) > 2:
        raise ExportError(f"--image-size takes H or H W, got {args.trace_size}")
    size = tuple(args.trace_size) if len(args.trace_size) == 2 else args.trace_size[0]
    if args.format == "aoti" and (args.attention != "portable" or args.opset is not None):
        raise ExportError("--attention and --opset are ONNX options; --format aoti takes neither")
    model, post, _ = model_from_checkpoint(args.checkpoint, num_select=args.num_select)
    common = {
        "image_size": size,
        "dynamic": not args.static,
        "postprocess": args.postprocess,
        "num_select": post["bbox"].num_select,
    }
    if args.format == "onnx":
        to_onnx(model, args.output, opset=args.opset or DEFAULT_OPSET, attention=args.attention, **common)
    else:
        to_aoti(model, args.output, **common)
    print(f"ddetr export: wrote {args.output}")
