"""Checkpoints in the official format (`model`, `optimizer`, `lr_scheduler`, `epoch`,
`args`): read by the one reader (`ddetr.weights.files.read_checkpoint`), written by the one
safe writer (`ddetr.util.files.write_torch`: a crash at any moment leaves the previous one
intact), loaded strictly by `ddetr.weights.load_strict`. What is left here is a run's view of
them: the file name, the options saved, which one to resume, whether it fits."""

from __future__ import annotations

import os

from ..models.config import ARCHITECTURE, flag  # ARCHITECTURE: the options that decide the weights
from ..weights.errors import CheckpointError

CHECKPOINT = "checkpoint.pth"  # the file name in a run's output folder


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
