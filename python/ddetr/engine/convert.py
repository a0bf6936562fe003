"""`ddetr convert`: weights from one layout to the other, and one line saying what was read
and what was written."""

from __future__ import annotations

import os

from ..weights import convert
from ..weights.files import HF_WEIGHTS


def run_convert(src: str, dst: str, to: str, backbone: str = "transformers") -> str:
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
