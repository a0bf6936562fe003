"""`ddetr convert`: weights from one layout to the other, and one line saying what was read
and what was written. The destination is checked before anything is read
(`ddetr.weights.check_destination`): nothing is replaced without --overwrite."""

from __future__ import annotations

import os

from ...models.config import HF_BACKBONE_ROUTES
from ...weights import LAYOUTS, check_destination, convert
from .arguments import add_verbose, default_help

HELP = "convert weights between the official and the HF layout"


def add_arguments(p) -> None:
    p.add_argument("src", metavar="SRC", help="weights in either layout: .pth, .bin, .safetensors or an HF folder")
    p.add_argument("dst", metavar="DST", help="--to hf: a folder; --to official: a .pth or .safetensors file")
    p.add_argument("--to", required=True, choices=LAYOUTS)
    p.add_argument(
        "--backbone",
        dest="hf_backbone",
        choices=HF_BACKBONE_ROUTES,
        default=None,
        help="--to hf: transformers' own ResNet (loads without timm) or timm's names, as hub files (needs timm); "
        + default_help("hf_backbone"),
    )
    p.add_argument("--overwrite", action="store_true", default=None, help="replace files already at DST")
    add_verbose(p)


def run(args) -> None:
    print(run_convert(args.src, args.dst, args.to, args.hf_backbone, args.overwrite))


def run_convert(src: str, dst: str, to: str, backbone: str = "transformers", overwrite: bool = False) -> str:
    out = check_destination(src, dst, to, overwrite)
    info = convert(src, dst, to=to, backbone=backbone, overwrite=overwrite)
    read = (
        f"{info.layout} layout"
        + (f" ({info.backbone_route} backbone names)" if info.backbone_route else "")
        + f", {info.variant}, {info.options['backbone']}, {info.num_classes} classes"
    )
    if to == "hf":
        written = f"{out[1]} + {os.path.basename(out[0])} (HF layout, {backbone} backbone)"
    else:
        written = f"{dst} (official layout)"
    return f"{src}: {read} -> {written}"
