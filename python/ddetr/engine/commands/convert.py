"""`ddetr convert`: weights from one layout to the other, and one line saying what was read
and what was written."""

from __future__ import annotations

import os

from ...models.config import HF_BACKBONE_ROUTES
from ...weights import WeightsError, convert
from ...weights.files import HF_WEIGHTS
from .arguments import default_help

HELP = "convert weights between the official and the HF layout"
FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def add_arguments(p) -> None:
    p.add_argument("src", metavar="SRC", help="weights in either layout: .pth, .bin, .safetensors or an HF folder")
    p.add_argument("dst", metavar="DST", help="--to hf: a folder; --to official: a .pth or .safetensors file")
    p.add_argument("--to", required=True, choices=("official", "hf"))
    p.add_argument(
        "--backbone",
        dest="hf_backbone",
        choices=HF_BACKBONE_ROUTES,
        default=None,
        help="--to hf: transformers' own ResNet (loads without timm) or timm's names, as hub files (needs timm); "
        + default_help("hf_backbone"),
    )


def run(args) -> None:
    print(run_convert(args.src, args.dst, args.to, args.hf_backbone))


def run_convert(src: str, dst: str, to: str, backbone: str = "transformers") -> str:
    is_file = dst.endswith(FILE_SUFFIXES)
    if to == "hf" and is_file:
        raise WeightsError(f"{dst}: --to hf writes a folder (config.json + weights), not a file; give a folder name")
    if to == "official" and (not is_file or os.path.isdir(dst)):
        raise WeightsError(f"{dst}: --to official writes a file ending in {' or '.join(FILE_SUFFIXES)}")
    info = convert(src, dst, to=to, backbone=backbone)
    read = (
        f"{info.layout} layout"
        + (f" ({info.backbone_route} backbone names)" if info.backbone_route else "")
        + f", {info.variant}, {info.options['backbone']}, {info.num_classes} classes"
    )
    if to == "hf":
        weights = next(n for n in HF_WEIGHTS if os.path.isfile(os.path.join(dst, n)))
        written = f"{os.path.join(dst, 'config.json')} + {weights} (HF layout, {backbone} backbone)"
    else:
        written = f"{dst} (official layout)"
    return f"{src}: {read} -> {written}"
