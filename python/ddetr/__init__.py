"""ddetr: multi-scale deformable attention as a compiled PyTorch op, and Deformable DETR.

`import ddetr` loads the op library, after which `torch.ops.ddetr.ms_deform_attn` is
available to any model.
"""
import torch

from . import _build_info


def _load_library():
    built, running = _build_info.torch_version, torch.__version__
    if built != running:
        raise ImportError(
            f"ddetr was built against torch {built} but torch {running} is installed; "
            "rebuild it with `pip install --no-build-isolation .` under this torch"
        )
    from . import _C

    return _C


_C = _load_library()
__version__ = _build_info.version

from . import ops  # noqa: E402  (registers autograd and fake kernels)
from .ops import ms_deform_attn  # noqa: E402


def build_info() -> dict:
    """How the op library was built: torch version, CUDA architectures, CPU kernels."""
    return dict(_C.build_info())


__all__ = ["ms_deform_attn", "build_info", "ops", "__version__"]
