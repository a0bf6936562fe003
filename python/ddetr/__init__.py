"""ddetr: multi-scale deformable attention as a compiled PyTorch op, and Deformable DETR.

`import ddetr` loads the op library, after which `torch.ops.ddetr.ms_deform_attn` is
available to any model.
"""

import os

import torch

from . import _build_info


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("+")[0].split(".")[:2])


# The op library's path: loaded here, and named to AOTInductor packages that run without ddetr.
OPS_LIBRARY = os.path.join(os.path.dirname(__file__), _build_info.ops_library)


def _load_library():
    # The op library uses only LibTorch's stable ABI, targeting torch 2.10: it loads in that
    # torch and every later one, whichever torch built it.
    minimum = _build_info.torch_target
    if _version_tuple(torch.__version__) < _version_tuple(minimum):
        raise ImportError(
            f"ddetr needs torch >= {minimum} (its op library uses LibTorch's stable ABI, "
            f"introduced in torch {minimum}), but torch {torch.__version__} is installed"
        )
    torch.ops.load_library(OPS_LIBRARY)
    from . import _C

    return _C


_C = _load_library()
__version__ = _build_info.version

from . import ops  # noqa: E402  (registers autograd and fake kernels)
from .ops import ms_deform_attn, ms_deform_attn_v2  # noqa: E402


def build_info() -> dict:
    """How the op library was built (torch, stable-ABI target, CUDA architectures, CPU
    kernels) and the threading of the torch that runs it."""
    info = dict(_C.build_info())
    info["cuda_archs"] = info["cuda_archs"].split()  # CMake's names, e.g. ["80-real", "90-virtual"]
    info["parallel"] = torch.__config__.parallel_info()
    return info


def __getattr__(name):
    # optimize_for_inference imports the models (and scipy): only when first asked for.
    if name == "optimize_for_inference":
        from .inference import optimize_for_inference

        return optimize_for_inference
    raise AttributeError(f"module 'ddetr' has no attribute {name!r}")


__all__ = ["ms_deform_attn", "ms_deform_attn_v2", "optimize_for_inference", "build_info", "ops", "__version__"]
