"""Small helpers shared by the model, losses and data pipeline: box conversions and IoU
(`box_ops`), the padded image batch and distributed helpers (`misc`)."""

from . import box_ops, misc
from .misc import NestedTensor, nested_tensor_from_tensor_list

__all__ = ["box_ops", "misc", "NestedTensor", "nested_tensor_from_tensor_list"]
