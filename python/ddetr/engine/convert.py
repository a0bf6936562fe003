"""`ddetr convert`: weights from one layout to the other, and one line saying what was read
and what was written."""

from __future__ import annotations

import os

from ..weights import WeightsError, convert
from ..weights.files import HF_WEIGHTS

FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


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
