"""Checkpoints in the official format (`model`, `optimizer`, `lr_scheduler`, `epoch`,
`args`), written so that a crash at any moment leaves the previous one intact: the new one
goes to a temporary file in the same folder, is flushed to disk, then renamed over the old
(a rename within one file system is atomic)."""

from __future__ import annotations

import argparse
import glob
import os
import tempfile

import torch

from ..models.config import ARCHITECTURE, flag  # ARCHITECTURE: the options that decide the weights
from ..weights.errors import CheckpointError, first
from ..weights.fitting import mismatches

CHECKPOINT = "checkpoint.pth"  # the file name in a run's output folder


def _temporary(path: str) -> tuple:
    """(prefix, suffix) of the temporaries `save_checkpoint` writes next to `path`."""
    return os.path.basename(path) + ".", ".tmp"


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: set it straight back
    os.umask(mask)
    return mask


def save_checkpoint(state: dict, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    prefix, suffix = _temporary(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600: the mode any other file of the run gets
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """A checkpoint dict; official checkpoints (whose `args` is an argparse.Namespace) load
    too. Only tensors and plain containers are unpickled (weights_only)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(f"{path}: cannot read checkpoint: {e}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a ddetr / Deformable DETR checkpoint (no 'model' entry)")
    model = ckpt["model"]
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise CheckpointError(f"{path}: its 'model' entry is not a state dict (names -> tensors)")
    if not isinstance(ckpt.get("args") or {}, (dict, argparse.Namespace)):
        raise CheckpointError(f"{path}: its 'args' entry is not a dict of options")
    return ckpt


def checkpoint_args(ckpt: dict) -> dict:
    """The training options stored in a checkpoint, as a dict."""
    args = ckpt.get("args") or {}
    return dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)


def remove_stale_temporaries(path: str) -> None:
    """Delete what a save to `path` that was killed half-way left behind."""
    prefix, suffix = _temporary(path)
    for f in glob.glob(os.path.join(os.path.dirname(os.path.abspath(path)), glob.escape(prefix) + "*" + suffix)):
        os.unlink(f)


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


def load_model_state(model, ckpt: dict, path: str) -> None:
    """Load strictly; what does not fit is named briefly (the first keys, never a dump)."""
    missing, unexpected, shapes = mismatches(model, ckpt["model"])
    if missing or unexpected or shapes:
        own = model.state_dict()
        parts = [f"missing {first(missing, 3)}"] if missing else []
        parts += [f"unexpected {first(unexpected, 3)}"] if unexpected else []
        if shapes:
            parts.append(
                "shapes differ: "
                + first([f"{k} {tuple(ckpt['model'][k].shape)} vs {tuple(own[k].shape)}" for k in shapes], 2)
            )
        raise CheckpointError(f"{path}: its weights do not fit the model its options describe: " + "; ".join(parts))
    model.load_state_dict(ckpt["model"], strict=True)
