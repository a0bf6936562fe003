"""Finding every multi-scale deformable attention inside one HF transformers model and
moving it onto ddetr's op, instance by instance: nothing outside the model changes.

- Group A (`MultiScaleDeformableAttention` layers): the instance's forward becomes ddetr's
  (what `kernels.kernelize` does with a registered layer).
- Group B (mask2former, oneformer) and rt_detr_v2's attention call a module-level function
  from their forward: the instance gets a copy of its class's forward whose globals name
  ddetr's function instead (the class and the module stay as they are).
- D-FINE and DEIMv2 keep their core in `self.ms_deformable_attn_core`: set per instance.

A layer that does not fit (another signature, a sampling method the op does not know, a device
without a kernel) is left as it is, and the report says why.
"""

from __future__ import annotations

import inspect
import types
from collections import Counter
from dataclasses import dataclass, field

import torch

from .layers import LAYER_NAME, MultiScaleDeformableAttention, multi_scale_deformable_attention, op_has_kernel, v2_core

# transformers' arguments, which ddetr's replacements take in the same order
_LAYER_ARGS = (
    "self",
    "value",
    "value_spatial_shapes",
    "value_spatial_shapes_list",
    "level_start_index",
    "sampling_locations",
    "attention_weights",
    "im2col_step",
)
_V1_ARGS = ("value", "value_spatial_shapes", "sampling_locations", "attention_weights")
_V2_ARGS = _V1_ARGS + ("num_points_list", "method")
_V1_NAME, _V2_NAME = "multi_scale_deformable_attention", "multi_scale_deformable_attention_v2"
_CORE_ATTR = "ms_deformable_attn_core"  # D-FINE's and DEIMv2's per-instance core
# class names (lower case) of deformable attention, to report any we do not know how to take
_DEFORMABLE_NAMES = ("multiscaledeformable", "deformableattention")


@dataclass
class Report:
    """What `take_over` did to one model: layers moved onto the op per family, and layers
    left on transformers' path per (family, reason)."""

    model: str
    taken: Counter = field(default_factory=Counter)
    left: Counter = field(default_factory=Counter)

    def line(self) -> str:
        head = f"ddetr kernelize {self.model}:"
        if not self.taken and not self.left:
            return f"{head} no multi-scale deformable attention found; the model is unchanged"
        taken = sum(self.taken.values())
        text = f"{head} {taken} deformable-attention layer{'s' * (taken != 1)} now run on torch.ops.ddetr"
        if self.taken:
            text += " (" + ", ".join(f"{family} {n}" for family, n in sorted(self.taken.items())) + ")"
        if self.left:
            left = sum(self.left.values())
            reasons = "; ".join(f"{family} {n}: {why}" for (family, why), n in sorted(self.left.items()))
            text += f"; {left} left on transformers' path ({reasons})"
        return text

    __str__ = line


def take_over(model: torch.nn.Module) -> Report:
    """Moves every multi-scale deformable attention in `model` onto ddetr's op; see the module
    docstring. Idempotent. Returns the report (its `line()` is kernelize's summary)."""
    report = Report(type(model).__name__)
    no_kernel = _missing_device_kernel(model)
    handled = []  # module names taken or left, to spot deformable attention we do not know
    for name, module in model.named_modules():
        plan = _plan(module)
        if plan is None:
            continue
        install, why = plan
        family = _family(type(module))
        why = why or no_kernel
        if why:
            report.left[family, why] += 1
        else:
            install()
            report.taken[family] += 1
        handled.append(name)
    for name, module in model.named_modules():
        lowered = type(module).__name__.lower()
        if any(word in lowered for word in _DEFORMABLE_NAMES) and not _covers(name, handled):
            report.left[_family(type(module)), "an unknown deformable attention (no known core inside it)"] += 1
            handled.append(name)
    return report


def _plan(module):
    """(install, None), (None, why it is left) or None (not a deformable-attention core)."""
    cls = type(module)
    if cls.__name__ == LAYER_NAME:
        args = _arg_names(cls.forward)
        if args != _LAYER_ARGS:
            return None, f"its forward takes {args}, not transformers' {_LAYER_ARGS}"
        return lambda: setattr(module, "forward", types.MethodType(MultiScaleDeformableAttention.forward, module)), None
    if _CORE_ATTR in vars(module):
        return _plan_v2(module, "decoder_method", "num_points_list", lambda core: setattr(module, _CORE_ATTR, core))
    code = getattr(getattr(cls.forward, "__code__", None), "co_names", ())
    if _V2_NAME in code:
        return _plan_v2(module, "method", "n_points_list", lambda core: _swap_global(module, _V2_NAME, core))
    if _V1_NAME in code:
        theirs = cls.forward.__globals__.get(_V1_NAME)
        if _arg_names(theirs) != _V1_ARGS:
            return None, f"its {_V1_NAME} takes {_arg_names(theirs)}, not {_V1_ARGS}"
        return lambda: _swap_global(module, _V1_NAME, multi_scale_deformable_attention), None
    return None


def _plan_v2(module, method_attr, points_attr, install):
    method, points = getattr(module, method_attr, None), getattr(module, points_attr, None)
    if not isinstance(method, str) or not isinstance(points, (list, tuple)) or not points:
        return None, f"no {method_attr} / {points_attr} to read its sampling from"
    core, why = v2_core(method)
    return (None, why) if why else ((lambda: install(core)), None)


def _swap_global(module, name, replacement):
    """The instance's forward becomes its class's forward with global `name` = `replacement`."""
    theirs = type(module).forward
    ours = types.FunctionType(
        theirs.__code__, {**theirs.__globals__, name: replacement}, theirs.__name__, theirs.__defaults__,
        theirs.__closure__,
    )  # fmt: skip
    ours.__kwdefaults__, ours.__qualname__, ours.__doc__ = theirs.__kwdefaults__, theirs.__qualname__, theirs.__doc__
    module.forward = types.MethodType(ours, module)


def _arg_names(function) -> tuple:
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return ()


def _family(cls) -> str:
    """transformers' model family ("deformable_detr") from the class's module, else the module."""
    parts = cls.__module__.split(".")
    return parts[2] if parts[:2] == ["transformers", "models"] and len(parts) > 2 else cls.__module__


def _covers(name: str, handled: list) -> bool:
    """Whether module `name` is, or contains, a handled module ("" is the model itself)."""
    prefix = name + "." if name else ""
    return any(h == name or h.startswith(prefix) for h in handled)


def _missing_device_kernel(model) -> str | None:
    """Why the op cannot run where `model`'s tensors are, or None."""
    devices = {t.device.type for t in model.parameters()} | {t.device.type for t in model.buffers()}
    for device in sorted(devices - {"meta"}):
        if not op_has_kernel(device):
            return f"this ddetr build has no {device} kernel"
    return None
