"""Checkpoints in the official format (`model`, `optimizer`, `lr_scheduler`, `epoch`,
`args`), written so that a crash at any moment leaves the previous one intact: the new one
goes to a temporary file in the same folder, is flushed to disk, then renamed over the old
(a rename within one file system is atomic)."""
from __future__ import annotations

import argparse
import os
import tempfile

import torch


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(state: dict, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
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
    return ckpt


def checkpoint_args(ckpt: dict) -> dict:
    """The training options stored in a checkpoint, as a dict."""
    args = ckpt.get("args") or {}
    return dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
