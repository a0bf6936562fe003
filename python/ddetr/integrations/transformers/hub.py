"""ddetr as the `kernels` package's "MultiScaleDeformableAttention" layer, so that
`from_pretrained(..., use_kernels=True)` and `kernels.kernelize(model, ...)` pick the op.

Written against kernels 0.17 (which transformers 5.22 takes) and the API transformers 5.23+
calls in kernels 0.18 (`register_kernel_mapping`, `Device`, `CUDAProperties`, unchanged
there). A repository is any hashable object whose `load()` returns the layer class.

On CUDA, transformers registers the hub kernel (kernels-community/deformable-detr) for
"cuda" again on every `from_pretrained(use_kernels=True)` and on every `.train()` /
`.eval()` of such a model. A plain "cuda" entry covers capabilities [0, sys.maxsize] and a
later one replaces it; ours is registered for a narrower capability range that still holds
every GPU, and kernels picks the narrowest matching range, whatever the order.
"""

from __future__ import annotations

from .layers import LAYER_NAME, MultiScaleDeformableAttention, op_has_kernel

# Capabilities are major * 10 + minor (9.0 -> 90): every GPU, in a range narrower than the
# unbounded one a plain "cuda" entry gets.
_CUDA_CAPABILITIES = (0, 10_000)


class DdetrRepository:
    """The `kernels` repository of ddetr's layer: local, so no network is needed."""

    layer_name = LAYER_NAME

    def load(self):
        return MultiScaleDeformableAttention

    def __str__(self) -> str:
        return "ddetr (torch.ops.ddetr.ms_deform_attn)"


REPOSITORY = DdetrRepository()


def register(devices: tuple = ("cpu", "cuda")) -> list:
    """Registers ddetr as the "MultiScaleDeformableAttention" layer in the `kernels`
    mapping for `devices` ("cpu", "cuda") where this build has a kernel. Returns the
    devices registered. Raises ImportError naming the package when `kernels` is absent."""
    try:
        import kernels
    except ImportError as e:
        raise ImportError(
            "ddetr.integrations.transformers.register() needs the `kernels` package "
            "(pip install kernels); without it, use ddetr.integrations.transformers.kernelize(model)"
        ) from e
    unknown = set(devices) - {"cpu", "cuda"}
    if unknown:
        raise ValueError(f"devices must be among 'cpu' and 'cuda', got {sorted(unknown)}")
    registered = [d for d in devices if op_has_kernel(d)]
    mapping = {_device(kernels, d): REPOSITORY for d in registered}
    if mapping:
        kernels.register_kernel_mapping({LAYER_NAME: mapping})
    return registered


def _device(kernels, device: str):
    properties = getattr(kernels, "CUDAProperties", None)
    if device != "cuda" or properties is None:
        return device
    low, high = _CUDA_CAPABILITIES
    return kernels.Device(type="cuda", properties=properties(min_capability=low, max_capability=high))
