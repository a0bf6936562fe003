"""AOTInductor: the exported program compiled ahead of time into a .pt2 package that runs
from Python with torch alone, plus the op library (the package calls
ddetr::ms_deform_attn through the dispatcher, so the op must be registered first)."""

from __future__ import annotations

import torch

from ..models.config import DEFAULTS
from ..util.files import atomic_path
from ._graph import ExportError, export_program


def op_library_path() -> str:
    """The op library to `torch.ops.load_library` before loading an AOTI package, where
    ddetr itself is not imported."""
    from .. import OPS_LIBRARY

    return OPS_LIBRARY


def to_aoti(
    model,
    path: str,
    image_size=800,
    dynamic: bool = True,
    postprocess: bool = False,
    num_select: int = DEFAULTS["num_select"],
) -> str:
    """Compile `model` with AOTInductor into the package `path` (.pt2); returns the path.
    Inputs and outputs as export_program; `model` may also be a program export_program
    made. The compile takes minutes on a CPU."""
    if not str(path).endswith(".pt2"):
        raise ExportError(f"an AOTInductor package path must end in .pt2, got {path!r}")
    program = (
        model
        if isinstance(model, torch.export.ExportedProgram)
        else export_program(model, image_size, dynamic, postprocess, num_select)
    )
    with torch.no_grad(), atomic_path(path) as tmp:  # whole or not at all (the temporary keeps .pt2)
        torch._inductor.aoti_compile_and_package(program, package_path=tmp)
    return path


def load_aoti(path: str):
    """The runner of an AOTI package, with the op library loaded: call it with (images, mask
    [, target_sizes]); it returns the outputs as a list."""
    torch.ops.load_library(op_library_path())
    return torch._inductor.aoti_load_package(path)
