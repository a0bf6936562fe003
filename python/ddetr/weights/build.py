"""A model built from weights in either layout: the options they imply fill those not
given, and the weights must fit strictly."""

from __future__ import annotations

import os

import torch

from ..models import build_criterion, build_model, build_postprocessors
from ..models.config import check_options
from . import load  # defined in __init__ before it imports this module
from .errors import CheckpointError, WeightsError
from .fitting import load_strict


def build(weights, **options):
    """(model, criterion, postprocessors), as `ddetr.models.build`, from `weights`: a file or
    HF folder in either layout (ddetr.weights); the options it implies fill those not given,
    and it must fit strictly (ddetr.weights.WeightsError names what does not)."""
    state, info = load(weights)
    options = {**info.options, **options}
    model = build_model(**options)
    load_strict(model, state, info.path, info)
    return model, build_criterion(**options), build_postprocessors(**options)


def model_from_checkpoint(path: str, device="cpu", num_select: int | None = None):
    """(model in eval mode, postprocessors, the checkpoint's training options) from weights
    in either layout (`ddetr.weights.load`): a ddetr or official checkpoint, a .bin /
    .safetensors file, or an HF folder. Model options come from the weights and the
    checkpoint's args (or config.json); the class names, when known, are in the returned
    options' `dataset` (a ddetr run's data set, or an HF config's id2label)."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state, info = load(path)
    except WeightsError as e:
        raise CheckpointError(str(e)) from None
    opts = dict(info.options)
    check_options(opts, path)
    broken = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken:
        raise CheckpointError(f"{path}: weight {broken} is not finite (NaN or inf): the model cannot detect anything")
    opts["backbone_weights"] = None  # the checkpoint holds them
    if num_select is not None:
        opts["num_select"] = num_select
    try:
        model = build_model(**opts)
        load_strict(model, state, info.path, info)
    except WeightsError as e:  # before ValueError: it is one
        raise CheckpointError(str(e)) from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its saved options do not describe a model: {e}") from None
    saved = dict(info.args)
    if not saved.get("dataset"):  # an HF config's names (not its LABEL_<n> placeholders) and category ids
        names = {k: v for k, v in info.id2label.items() if v != f"LABEL_{k}"}
        saved["dataset"] = dict(label_names=names, label_to_category=info.label_to_category)
    model.to(device).eval()
    return model, build_postprocessors(**opts), saved
