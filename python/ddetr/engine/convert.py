"""`ddetr convert`: weights from one layout to the other, and one line saying what was read
and what was written. The destination is checked before anything is read
(`ddetr.weights.check_destination`): nothing is replaced without --overwrite."""

from __future__ import annotations

import os

from ..weights import check_destination, convert


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
