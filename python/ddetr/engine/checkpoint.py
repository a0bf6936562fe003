"""Checkpoints in the official format (`model`, `optimizer`, `lr_scheduler`, `epoch`,
`args`): read by the one reader (`ddetr.weights.files.read_checkpoint`), written by the one
safe writer (`ddetr.util.files.write_torch`: a crash at any moment leaves the previous one
intact), loaded strictly by `ddetr.weights.load_strict`."""

from __future__ import annotations

import os

import torch

from ..errors import UserError
from ..models import build_model, build_postprocessors
from ..weights import WeightsError, load, load_strict
from ..weights.variant import ARCHITECTURE  # the options that decide the weights
from .options import check_options, flag

CHECKPOINT = "checkpoint.pth"  # the file name in a run's output folder


class CheckpointError(UserError, RuntimeError):
    pass


def args_to_dict(args) -> dict:
    """The options of a run as the checkpoint stores them (plain values only)."""
    out = {}
    for k, v in vars(args).items():
        if isinstance(v, (str, int, float, bool, type(None), dict)):
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
            out[k] = list(v)
    return out


def resume_path(resume: str | None, output_dir: str) -> str | None:
    """The checkpoint --resume names; 'auto': <output_dir>/checkpoint.pth if there is one."""
    if not resume:
        return None
    if resume == "auto":
        path = os.path.join(output_dir, CHECKPOINT)
        return path if os.path.isfile(path) else None
    return resume


def check_fits(saved: dict, args, path: str, n: int = 3) -> None:
    """CheckpointError naming the first `n` model options given in `args` that differ from
    those the checkpoint `path` was trained with (its saved `args`)."""
    diff = [k for k in ARCHITECTURE if saved.get(k) is not None and getattr(args, k, None) not in (None, saved[k])]
    if diff:
        more = f" and {len(diff) - n} more" if len(diff) > n else ""
        given = ", ".join(f"{flag(k)} {saved[k]} (given: {getattr(args, k)})" for k in diff[:n])
        raise CheckpointError(f"{path}: was trained with {given}{more}; give those to continue it")


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
