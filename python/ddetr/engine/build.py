"""What a run is made of, built from its resolved options (`options.resolve`): the data
sets and loaders, and the detector with its loss and post-processing."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from ..data.coco import build_coco, coco_paths
from ..data.collate import collate_fn
from ..data.synthetic import SyntheticConfig, make_synthetic
from ..data.transforms import official_sizes
from ..errors import UserError
from ..models import DEFAULTS as MODEL_DEFAULTS
from ..models import build
from .distributed import DistInfo
from .options import has_data


def seed_everything(seed: int) -> None:
    seed = seed % (2**31)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_options(args) -> dict:
    """The model's options (`ddetr.models.DEFAULTS` names) that `args` sets."""
    return {k: getattr(args, k) for k in MODEL_DEFAULTS if getattr(args, k, None) is not None}


def synthetic_data(args) -> str:
    """The synthetic data set (`SyntheticConfig`, sizes from --num-train / --num-val when
    given) under <output-dir>/data, written unless already there; returns its root."""
    sizes = {k: getattr(args, k) for k in ("num_train", "num_val") if getattr(args, k, None)}
    return make_synthetic(os.path.join(args.output_dir, "data"), SyntheticConfig(**sizes))


def build_datasets(args, need_train: bool = True):
    """(train set or None, val set) from --coco-path or the explicit image folder /
    annotation file options."""
    if not has_data(args):
        raise UserError(
            "no data: give --coco-path DIR (COCO layout) or --val-images DIR --val-ann FILE"
            + (" --train-images DIR --train-ann FILE" if need_train else "")
        )
    sizes = official_sizes(args.image_size)

    def paths(split):
        img = getattr(args, f"{split}_images", None)
        ann = getattr(args, f"{split}_ann", None)
        if img or ann:
            if not (img and ann):
                raise UserError(f"--{split}-images and --{split}-ann go together")
            return img, ann
        if not args.coco_path:
            raise UserError(f"no {split} data: give --coco-path DIR or --{split}-images DIR --{split}-ann FILE")
        return coco_paths(args.coco_path, split)

    train = build_coco("train", *paths("train"), sizes=sizes) if need_train else None
    val = build_coco("val", *paths("val"), sizes=sizes)
    return train, val


def build_loader(
    dataset, batch_size: int, train: bool, dist: DistInfo, seed: int, num_workers: int, generator=None
) -> DataLoader:
    # One DistributedSampler in every case: with one replica it is a seeded shuffle whose
    # order depends only on (seed, epoch), which makes resuming exact.
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=train, seed=seed)
    pin = dist.device.type == "cuda"
    if train:
        drop_last = len(sampler) >= batch_size  # a tiny set still yields one batch
        batches = BatchSampler(sampler, batch_size, drop_last=drop_last)
        return DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=collate_fn,
            num_workers=num_workers,
            generator=generator,
            pin_memory=pin,
        )
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn, num_workers=num_workers, pin_memory=pin
    )


def build_detector(args, device: torch.device, num_classes: int):
    """(model, criterion, postprocessors) on `device`, from the model options in `args`,
    initialised from `args.seed` (the same weights on every process)."""
    seed_everything(args.seed)
    try:
        model, criterion, post = build(**{**model_options(args), "num_classes": num_classes})
    except Exception as e:  # noqa: BLE001 - validated options leave only the weights file to fail
        if not args.backbone_weights:
            raise
        first_line = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(
            f"--backbone-weights {args.backbone_weights}: not a torchvision {args.backbone} state_dict ({first_line})"
        ) from None
    if args.train_full_backbone:
        # from random init the frozen stem and layer1 would stay random forever
        for p in model.backbone.parameters():
            p.requires_grad_(args.lr_backbone > 0)
    return model.to(device), criterion.to(device), post


def dataset_info(ds) -> dict:
    """What a checkpoint keeps of its training set: label -> category id, label names."""
    return {"label_to_category": dict(ds.label_to_category), "label_names": ds.category_names}
