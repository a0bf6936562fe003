"""The mixed-precision policy of training and evaluation: with --amp the model runs under
bfloat16 autocast, on the CPU as on CUDA (the deformable attention op takes bfloat16 values
and weights with float32 sampling locations under autocast on both), and its outputs are
cast back to float32 before the matcher, the losses (focal, GIoU) and post-processing,
which need the range and precision. Parameters, gradients and the optimiser's state stay
float32."""

from __future__ import annotations

import torch


def amp_enabled(amp: bool, device: torch.device) -> bool:
    # the devices whose autocast the op registers (ddetr.ops); elsewhere --amp is a no-op
    return bool(amp) and device.type in ("cpu", "cuda")


def forward(model, samples, amp: bool, device: torch.device):
    """model(samples), under bfloat16 autocast when `amp_enabled`; floating outputs float32."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp_enabled(amp, device)):
        outputs = model(samples)
    return to_float32(outputs)


def to_float32(x):
    """Floating tensors in a nest of dicts, lists and tuples cast to float32."""
    if torch.is_tensor(x):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: to_float32(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_float32(v) for v in x)
    return x
