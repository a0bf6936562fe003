"""HF transformers' DeformableDetrForObjectDetection as a benchmark peer: built from a ddetr
model's options and loaded (strictly) with its weights through ddetr's converter, so both
sides run the same network. Its encoder and decoder run the pure-PyTorch deformable
attention (grid_sample) on the CPU, as HF users there do. Needs the `bench` extra
(transformers); `import_transformers` skips the case with the reason when it is absent."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

from ddetr import weights
from ddetr.models import DEFAULTS

ROUTE = "transformers"  # transformers' own ResNet: no timm (which does not import here)


def import_transformers():
    transformers = pytest.importorskip("transformers", reason="the bench extra (transformers) is not installed")
    transformers.utils.logging.disable_progress_bar()
    return transformers


def hf_model(model, **options):
    """The HF model with `model`'s weights, written by ddetr's converter to an HF folder and
    read by from_pretrained (which maps the file names to transformers 5's module names);
    `options`: the ddetr options `model` was built with, beyond the defaults. Same mode
    (train / eval) and device as `model`."""
    transformers = import_transformers()
    with tempfile.TemporaryDirectory() as tmp:
        src, folder = os.path.join(tmp, "ddetr.pth"), os.path.join(tmp, "hf")
        weights.files.write_state(model.state_dict(), src, args=dict(DEFAULTS, **options))
        weights.convert(src, folder, to="hf", backbone=ROUTE)
        hf, info = transformers.DeformableDetrForObjectDetection.from_pretrained(folder, output_loading_info=True)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    assert not bad, f"the converted weights do not fit transformers' model: {bad}"
    return hf.train(model.training).to(next(model.parameters()).device)


def hf_inputs(images: list):
    """pixel_values and pixel_mask (1 = a real pixel) of a list of equal-size images."""
    pixel_values = torch.stack(images)
    mask = torch.ones(pixel_values.shape[0], *pixel_values.shape[2:], dtype=torch.long, device=pixel_values.device)
    return pixel_values, mask


def hf_labels(targets: list) -> list:
    """ddetr's targets (labels, normalised cxcywh boxes) as HF's `labels` argument."""
    return [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
