"""Data: COCO-format data sets, the official transforms, padded batches, synthetic data."""

from .coco import CocoDetection, DataError, build_coco, coco_paths, load_coco_json
from .collate import collate_fn, move_targets
from .synthetic import SHAPES, SyntheticConfig, make_synthetic
from .transforms import make_transforms, official_sizes

__all__ = [
    "CocoDetection",
    "DataError",
    "build_coco",
    "coco_paths",
    "load_coco_json",
    "collate_fn",
    "move_targets",
    "SHAPES",
    "SyntheticConfig",
    "make_synthetic",
    "make_transforms",
    "official_sizes",
]
