"""The training driver: data, model, optimiser, the epoch loop with evaluation, logs and
checkpoints, single process or under torchrun.

Reproducibility: every epoch reseeds Python, NumPy and torch from (seed, epoch, rank), and
the sampler shuffles from (seed, epoch), so a run resumed from the checkpoint of epoch e
takes exactly the steps an uninterrupted run takes after epoch e.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import math
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from . import distributed as D
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import _float_outputs, evaluate
from .optim import build_optimizer, build_scheduler
from .progress import Progress

CHECKPOINT = "checkpoint.pth"


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN or infinite loss (or gradient)."""


def seed_everything(seed: int) -> None:
    seed = seed % (2 ** 31)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_options(args) -> dict:
    from ..models import DEFAULTS

    return {k: getattr(args, k) for k in DEFAULTS if getattr(args, k, None) is not None}


def build_datasets(args, need_train: bool = True):
    """(train set or None, val set) from --coco-path or the explicit image folder /
    annotation file options."""
    from ..data.coco import build_coco, coco_paths
    from ..data.transforms import official_sizes

    sizes = official_sizes(args.image_size)

    def paths(split):
        img = getattr(args, f"{split}_images", None)
        ann = getattr(args, f"{split}_ann", None)
        if img or ann:
            if not (img and ann):
                raise SystemExit(f"--{split}-images and --{split}-ann go together")
            return img, ann
        if not args.coco_path:
            raise SystemExit("no data: give --coco-path DIR (COCO layout) or "
                             f"--{split}-images DIR --{split}-ann FILE")
        return coco_paths(args.coco_path, split)

    train = build_coco("train", *paths("train"), sizes=sizes) if need_train else None
    val = build_coco("val", *paths("val"), sizes=sizes)
    return train, val


def build_loader(dataset, batch_size: int, train: bool, dist: D.DistInfo, seed: int,
                 num_workers: int, generator=None) -> DataLoader:
    from ..data.collate import collate_fn

    # One DistributedSampler in every case: with one replica it is a seeded shuffle whose
    # order depends only on (seed, epoch), which makes resuming exact.
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank,
                                 shuffle=train, seed=seed)
    if train:
        drop_last = len(sampler) >= batch_size  # a tiny set still yields one batch
        batches = BatchSampler(sampler, batch_size, drop_last=drop_last)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn,
                          num_workers=num_workers, generator=generator,
                          pin_memory=dist.device.type == "cuda")
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn,
                      num_workers=num_workers, pin_memory=dist.device.type == "cuda")


def _loss(criterion, outputs, targets):
    loss_dict = criterion(outputs, targets)
    weights = criterion.weight_dict
    total = sum(loss_dict[k] * weights[k] for k in loss_dict if k in weights)
    return total, loss_dict


def train_one_epoch(model, criterion, loader, optimizer, device, epoch: int,
                    clip_max_norm: float = 0.1, amp: bool = False, progress: Progress | None = None,
                    max_steps: int | None = None) -> dict:
    """One pass over `loader`; returns the epoch's mean losses and the last lr."""
    from ..data.collate import move_targets

    model.train()
    criterion.train()
    sums, n = {}, 0
    use_amp = amp and device.type == "cuda"
    for step, (samples, targets) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        samples = samples.to(device, non_blocking=True)
        targets = move_targets(targets, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            outputs = model(samples)
        # losses (matching, focal, GIoU) in float32 even under autocast
        loss, loss_dict = _loss(criterion, _float_outputs(outputs), targets)
        logged = D.reduce_dict({"loss": loss.detach(),
                                **{k: v.detach() for k, v in loss_dict.items() if not k[-1].isdigit()}})
        value = float(logged["loss"])
        if not math.isfinite(value):  # the same reduced value on every process: all stop
            raise NonFiniteLossError(
                f"loss is {value} at epoch {epoch + 1} step {step + 1}; losses: "
                + ", ".join(f"{k}={float(v):.4g}" for k, v in logged.items())
                + ". Training stopped; the last checkpoint was not overwritten.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_max_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
            if not torch.isfinite(norm):
                raise NonFiniteLossError(
                    f"gradient norm is {float(norm)} at epoch {epoch + 1} step {step + 1} (loss {value:.4g}). "
                    "Training stopped; the last checkpoint was not overwritten.")
        optimizer.step()
        for k, v in logged.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n += 1
        if progress is not None:
            progress.update(step + 1, {"loss": sums["loss"] / n, "lr": optimizer.param_groups[0]["lr"]})
    if progress is not None:
        progress.close()
    stats = {k: v / max(n, 1) for k, v in sums.items()}
    stats["lr"] = optimizer.param_groups[0]["lr"]
    return stats


def _json_safe(args) -> dict:
    out = {}
    for k, v in vars(args).items():
        if isinstance(v, (str, int, float, bool, type(None))):
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
            out[k] = list(v)
        elif isinstance(v, dict):
            out[k] = v
    return out


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _resume_path(args) -> str | None:
    if not args.resume:
        return None
    if args.resume == "auto":
        path = os.path.join(args.output_dir, CHECKPOINT)
        return path if os.path.isfile(path) else None
    return args.resume


def _load_model_state(model, ckpt: dict, path: str) -> None:
    from .checkpoint import CheckpointError

    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: does not fit the model built from these options "
                              f"(give the options it was trained with): {e}") from None


def dataset_info(ds) -> dict:
    return {"label_to_category": dict(ds.label_to_category), "label_names": ds.category_names}


def build_model(args, dist: D.DistInfo, num_classes: int):
    from ..models import build

    seed_everything(args.seed)  # the same initial weights on every process
    opts = model_options(args)
    opts["num_classes"] = num_classes
    model, criterion, post = build(**opts)
    if getattr(args, "train_full_backbone", False):
        # from random init the frozen stem and layer1 would stay random forever
        for name, p in model.backbone.named_parameters():
            p.requires_grad_(args.lr_backbone > 0)
    model.to(dist.device)
    criterion.to(dist.device)
    return model, criterion, post


def train(args) -> dict:
    """Train as `args` say; returns the last evaluation's metrics (main process)."""
    dist = D.init_distributed(args.device)
    try:
        return _train(args, dist)
    finally:
        D.cleanup()


def _train(args, dist: D.DistInfo) -> dict:
    main = dist.is_main
    os.makedirs(args.output_dir, exist_ok=True)
    train_set, val_set = build_datasets(args)
    if args.num_classes is None:
        args.num_classes = max(train_set.num_classes, val_set.num_classes)
    args.dataset = dataset_info(train_set)
    model, criterion, post = build_model(args, dist, args.num_classes)
    model_without_ddp = model
    if dist.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            find_unused_parameters=args.find_unused_parameters)
    n_parameters = sum(p.numel() for p in model_without_ddp.parameters() if p.requires_grad)
    optimizer = build_optimizer(model_without_ddp, args.lr, args.lr_backbone, args.weight_decay,
                                args.lr_linear_proj_mult)
    scheduler = build_scheduler(optimizer, args.lr_drop)

    start_epoch = 0
    resume = _resume_path(args)
    if resume:
        ckpt = load_checkpoint(resume)
        _load_model_state(model_without_ddp, ckpt, resume)
        if "optimizer" in ckpt and "lr_scheduler" in ckpt and "epoch" in ckpt:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["lr_scheduler"])
            start_epoch = ckpt["epoch"] + 1
        if main:
            print(f"resumed from {resume}: epoch {start_epoch} of {args.epochs}", flush=True)

    gen = torch.Generator()
    train_loader = build_loader(train_set, args.batch_size, True, dist, args.seed, args.num_workers, gen)
    val_loader = build_loader(val_set, args.batch_size, False, dist, args.seed, args.num_workers)
    ckpt_path = os.path.join(args.output_dir, CHECKPOINT)
    if main:  # temporaries of a save that was killed half-way
        for f in glob.glob(ckpt_path + ".*.tmp"):
            os.unlink(f)
    log_path = os.path.join(args.output_dir, "log.txt")
    if main and not resume and not getattr(args, "backbone_weights", None) and not args.quiet:
        print(f"note: the {args.backbone} backbone starts from random weights; the official recipe "
              "starts from ImageNet ones (--backbone-weights FILE, a torchvision state_dict)", flush=True)
    if main:
        print(f"training {n_parameters / 1e6:.2f}M parameters on {len(train_set)} images "
              f"({dist.world_size} process(es), {dist.device.type}), validating on {len(val_set)}", flush=True)

    metrics = {}
    start = time.time()
    for epoch in range(start_epoch, args.epochs):
        seed_everything(args.seed + 1000 * epoch + dist.rank)
        gen.manual_seed(args.seed + 1000 * epoch)
        train_loader.batch_sampler.sampler.set_epoch(epoch)
        bar = Progress(len(train_loader) if args.max_steps is None else min(args.max_steps, len(train_loader)),
                       f"epoch {epoch + 1}/{args.epochs}", enabled=main and not args.quiet,
                       print_freq=args.print_freq)
        train_stats = train_one_epoch(model, criterion, train_loader, optimizer, dist.device, epoch,
                                      args.clip_max_norm, args.amp, bar, args.max_steps)
        scheduler.step()
        if main:  # after the epoch is complete: a good checkpoint is never replaced by a bad one
            save_checkpoint({"model": model_without_ddp.state_dict(), "optimizer": optimizer.state_dict(),
                             "lr_scheduler": scheduler.state_dict(), "epoch": epoch,
                             "args": _json_safe(args)}, ckpt_path)
        last = epoch + 1 == args.epochs
        test_stats = {}
        if args.eval_every > 0 and ((epoch + 1) % args.eval_every == 0 or last):
            ebar = Progress(len(val_loader), "  eval", enabled=main and not args.quiet, print_freq=args.print_freq)
            test_stats = evaluate(model, criterion, post, val_loader, val_set.coco, dist.device,
                                  val_set.label_to_category, args.amp, ebar)
        if main:
            summary = test_stats.pop("coco_summary", None)
            log = {"epoch": epoch, **{f"train_{k}": v for k, v in train_stats.items()},
                   **{f"test_{k}": v for k, v in test_stats.items()}, "n_parameters": n_parameters,
                   "time": round(time.time() - start, 1)}
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(log) + "\n")
            if "AP" in test_stats:
                metrics = {"epoch": epoch, **{k: v for k, v in test_stats.items() if k != "loss"}}
                _write_json(os.path.join(args.output_dir, "metrics.json"), metrics)
                if not args.quiet:
                    print(f"epoch {epoch + 1}: AP {metrics['AP']:.3f}  AP50 {metrics['AP50']:.3f}  "
                          f"AP75 {metrics['AP75']:.3f}", flush=True)
                    if args.verbose and summary:
                        print(summary, end="", flush=True)
    if main and not args.quiet:
        print(f"training took {datetime.timedelta(seconds=int(time.time() - start))}; "
              f"checkpoint {ckpt_path}", flush=True)
    return metrics


def run_eval(args) -> dict:
    """Evaluate a checkpoint on the validation set; writes metrics.json (main process)."""
    dist = D.init_distributed(args.device)
    try:
        _, val_set = build_datasets(args, need_train=False)
        ckpt = load_checkpoint(args.checkpoint)
        model, post, _ = model_from_checkpoint(ckpt, args, dist.device, val_set.num_classes)
        loader = build_loader(val_set, args.batch_size, False, dist, 0, args.num_workers)
        bar = Progress(len(loader), "eval", enabled=dist.is_main and not args.quiet, print_freq=args.print_freq)
        stats = evaluate(model, None, post, loader, val_set.coco, dist.device,
                         val_set.label_to_category, args.amp, bar)
        if not dist.is_main:
            return {}
        summary = stats.pop("coco_summary", "")
        os.makedirs(args.output_dir, exist_ok=True)
        metrics = {"checkpoint": os.path.abspath(args.checkpoint), **stats}
        _write_json(os.path.join(args.output_dir, "metrics.json"), metrics)
        if not args.quiet:
            print(summary, end="")
        return metrics
    finally:
        D.cleanup()


def model_from_checkpoint(ckpt: dict, args=None, device="cpu", num_classes: int | None = None):
    """(model in eval mode, postprocessors, checkpoint args) from a ddetr or official
    checkpoint: model options come from the checkpoint's args, the number of classes from
    its class head."""
    from ..models import DEFAULTS, build_model, build_postprocessors
    from .checkpoint import checkpoint_args

    saved = checkpoint_args(ckpt)
    opts = {k: saved[k] for k in DEFAULTS if k in saved}
    heads = [v for k, v in ckpt["model"].items() if k.startswith("class_embed.") and k.endswith(".weight")]
    if heads:
        opts["num_classes"] = int(heads[0].shape[0])
    elif num_classes is not None:
        opts.setdefault("num_classes", num_classes)
    opts["backbone_weights"] = None  # the checkpoint holds them
    if args is not None and getattr(args, "num_select", None):
        opts["num_select"] = args.num_select
    model = build_model(**opts)
    _load_model_state(model, ckpt, getattr(args, "checkpoint", "checkpoint"))
    model.to(device).eval()
    return model, build_postprocessors(**opts), saved
