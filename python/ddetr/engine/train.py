"""Training: one optimisation step per batch (`train_one_epoch`) and the epoch loop with
evaluation, logs, checkpoints and the training-curve picture (`train`), single process or
under torchrun.

Reproducibility: every epoch reseeds Python, NumPy and torch from (seed, epoch, rank), and
the sampler shuffles from (seed, epoch), so a run resumed from the checkpoint of epoch e
takes exactly the steps an uninterrupted run takes after epoch e.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time

import torch

from ..data.check import check_images, describe, require_usable
from ..data.collate import move_targets
from ..errors import UserError
from ..models.config import flag
from ..util.files import append_line, atomic_write, remove_stale_temporaries, write_torch
from ..visualize import draw_training_curve
from ..weights import load_matching, load_strict
from ..weights.errors import CheckpointError
from ..weights.files import read_checkpoint
from . import distributed as D
from . import precision
from .build import build_datasets, build_detector, build_loader, dataset_info, seed_everything
from .checkpoint import CHECKPOINT, args_to_dict, check_fits, resume_path
from .evaluate import evaluate, write_metrics
from .optim import build_optimizer, build_scheduler
from .progress import Progress

LOG = "log.txt"  # one JSON line per epoch
CURVE = "training_curve.png"


class NonFiniteLossError(UserError, RuntimeError):
    """Training stopped on a NaN or infinite loss (or gradient)."""


def _stop(what: str, epoch: int, step: int, detail: str) -> NonFiniteLossError:
    return NonFiniteLossError(
        f"{what} at epoch {epoch + 1} step {step + 1}{detail}. "
        "Training stopped; the last checkpoint was not overwritten (a lower --lr may help)."
    )


def _all_finite(outputs) -> bool:
    """Every tensor of the model's outputs (all decoder layers, the encoder's proposals)."""
    if isinstance(outputs, torch.Tensor):
        return bool(torch.isfinite(outputs).all()) if outputs.is_floating_point() else True
    if isinstance(outputs, dict):
        return all(_all_finite(v) for v in outputs.values())
    if isinstance(outputs, (list, tuple)):
        return all(_all_finite(v) for v in outputs)
    return True


def train_one_epoch(
    model,
    criterion,
    loader,
    optimizer,
    device,
    epoch: int,
    clip_max_norm: float = 0.1,
    amp: bool = False,
    progress: Progress | None = None,
    max_steps: int | None = None,
) -> dict:
    """One pass over `loader`; returns the epoch's mean losses and the last lr."""
    model.train()
    criterion.train()
    sums, n = {}, 0
    for step, (samples, targets) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        samples = samples.to(device, non_blocking=True)
        targets = move_targets(targets, device)
        outputs = precision.forward(model, samples, amp, device)
        # a diverging model shows here first (the matcher would fail on NaN boxes); every
        # process learns whether any has gone, so that all stop together
        bad = D.reduce_dict({"bad": torch.tensor(0.0 if _all_finite(outputs) else 1.0, device=device)}, False)
        if float(bad["bad"]) > 0:
            raise _stop("the model's outputs are not finite", epoch, step, "")
        loss_dict = criterion(outputs, targets)
        loss = criterion.weighted_total(loss_dict)
        # logged: the total and the final layer's losses (not the per-layer _0, _1, ... copies)
        logged = D.reduce_dict(
            {"loss": loss.detach(), **{k: v.detach() for k, v in loss_dict.items() if not k[-1].isdigit()}}
        )
        value = float(logged["loss"])
        if not math.isfinite(value):  # the same reduced value on every process: all stop
            raise _stop(
                f"loss is {value}",
                epoch,
                step,
                "; losses: " + ", ".join(f"{k}={float(v):.4g}" for k, v in logged.items()),
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_max_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
            if not torch.isfinite(norm):
                raise _stop(f"gradient norm is {float(norm)}", epoch, step, f" (loss {value:.4g})")
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


def train(args) -> dict:
    """Train as the resolved options `args` say; returns the last evaluation's metrics
    (main process)."""
    dist = D.init_distributed(args.device)
    try:
        return _train(args, dist)
    finally:
        D.cleanup()


def _train(args, dist: D.DistInfo) -> dict:
    main = dist.is_main
    os.makedirs(args.output_dir, exist_ok=True)
    ckpt_path = os.path.join(args.output_dir, CHECKPOINT)
    resume = resume_path(args.resume, args.output_dir)
    elsewhere = not resume or os.path.abspath(resume) != os.path.abspath(ckpt_path)
    if elsewhere and os.path.isfile(ckpt_path) and not args.overwrite:
        raise UserError(
            f"--output-dir {args.output_dir} already holds {CHECKPOINT}: give --resume auto to continue it, "
            "--overwrite to replace it, or another --output-dir"
        )
    train_set, val_set = build_datasets(args)
    for split, ds in (("train", train_set), ("val", val_set)):
        check_images(ds)  # first: an image of another size than the JSON says explains no usable box
        counts = require_usable(ds, split)
        if counts["empty"] and main:
            print(f"warning: {ds.ann_file}: {describe(counts)}", flush=True)
    if args.num_classes is None:
        args.num_classes = max(train_set.num_classes, val_set.num_classes)
    args.dataset = dataset_info(train_set)
    model, criterion, post = build_detector(args, dist.device, args.num_classes)
    resume = resume_path(args.resume, args.output_dir)
    if args.pretrained:
        _pretrained(args, resume, model, main)
    model_without_ddp = model
    if dist.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            find_unused_parameters=args.find_unused_parameters,
        )
    if args.compile:
        # Compiled around DDP (after wrapping), as torch recommends: dynamo then splits the
        # graph at DDP's gradient buckets so communication overlaps the backward. The
        # checkpoints save model_without_ddp, the plain module: no `_orig_mod.` names.
        # dynamic=True: dynamo traces symbolic image (and batch) sizes from the first step,
        # meant to let the multi-scale sizes share one graph. With torch 2.13 that does not
        # hold in training: compiling the backward adds guards on the sizes of the saved
        # activations (their strides; `TORCH_LOGS=recompiles` shows them), so each new padded
        # batch size compiles again, until dynamo's recompile limit (8), after which new
        # sizes run eagerly. Fixed-size batches compile once.
        model = torch.compile(model, dynamic=True)
        criterion.compile_losses(dynamic=True)
    n_parameters = sum(p.numel() for p in model_without_ddp.parameters() if p.requires_grad)
    optimizer = build_optimizer(
        model_without_ddp, args.lr, args.lr_backbone, args.weight_decay, args.lr_linear_proj_mult
    )
    scheduler = build_scheduler(optimizer, args.lr_drop)

    start_epoch, applied = _resume(resume, model_without_ddp, optimizer, scheduler, args) if resume else (0, [])
    if resume and main:
        note = f"; applied {', '.join(applied)}" if applied else ""
        print(f"resumed from {resume}: epoch {start_epoch} of {args.epochs}{note}", flush=True)

    gen = torch.Generator()
    train_loader = build_loader(train_set, args.batch_size, True, dist, args.seed, args.num_workers, gen)
    val_loader = build_loader(val_set, args.batch_size, False, dist, args.seed, args.num_workers)
    log_path = os.path.join(args.output_dir, LOG)
    if main:
        remove_stale_temporaries(ckpt_path)
        if not resume and os.path.exists(log_path):  # a fresh run starts a fresh log
            os.unlink(log_path)
        if not resume and not args.backbone_weights and not args.pretrained and not args.quiet:
            print(
                f"note: the {args.backbone} backbone starts from random weights; the official recipe "
                "starts from ImageNet ones (--backbone-weights FILE, a torchvision state_dict)",
                flush=True,
            )
        print(
            f"training {n_parameters / 1e6:.2f}M parameters on {len(train_set)} images "
            f"({dist.world_size} process(es), {dist.device.type}), validating on {len(val_set)}",
            flush=True,
        )

    metrics = {}
    start = time.time()
    steps = len(train_loader) if args.max_steps is None else min(args.max_steps, len(train_loader))
    for epoch in range(start_epoch, args.epochs):
        seed_everything(args.seed + 1000 * epoch + dist.rank)
        gen.manual_seed(args.seed + 1000 * epoch)
        train_loader.batch_sampler.sampler.set_epoch(epoch)
        bar = Progress(
            steps, f"epoch {epoch + 1}/{args.epochs}", enabled=main and not args.quiet, print_freq=args.print_freq
        )
        train_stats = train_one_epoch(
            model,
            criterion,
            train_loader,
            optimizer,
            dist.device,
            epoch,
            clip_max_norm=args.clip_max_norm,
            amp=args.amp,
            progress=bar,
            max_steps=args.max_steps,
        )
        scheduler.step()
        broken = next((n for n, p in model_without_ddp.named_parameters() if not torch.isfinite(p).all()), None)
        if broken:  # the last step of the epoch diverged: keep the previous checkpoint
            raise _stop(f"weight {broken} is not finite", epoch, steps - 1, "")
        if main:  # after the epoch is complete: a good checkpoint is never replaced by a bad one
            write_torch(
                ckpt_path,
                {
                    "model": model_without_ddp.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "lr_scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "args": args_to_dict(args),
                },
            )
        test_stats = {}
        if args.eval_every > 0 and ((epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs):
            ebar = Progress(len(val_loader), "  eval", enabled=main and not args.quiet, print_freq=args.print_freq)
            test_stats = evaluate(
                model, criterion, post, val_loader, val_set.coco, dist.device, val_set.label_to_category, args.amp, ebar
            )
        if main:
            metrics = (
                _log_epoch(args, log_path, epoch, train_stats, test_stats, n_parameters, time.time() - start) or metrics
            )
            if epoch == start_epoch and epoch + 1 < args.epochs and not args.quiet:
                _print_estimate(time.time() - start, args.epochs - epoch - 1)
    if main and start_epoch >= args.epochs:
        print(
            f"nothing to train: {resume} has done {start_epoch} of --epochs {args.epochs}; no checkpoint written",
            flush=True,
        )
    elif main and not args.quiet:
        print(
            f"training took {datetime.timedelta(seconds=int(time.time() - start))}; checkpoint {ckpt_path}", flush=True
        )
    return metrics


def _print_estimate(first: float, remaining: int) -> None:
    """After the run's first epoch (`first` seconds, its evaluation included): how long the
    `remaining` epochs should take, at that pace."""
    rest = datetime.timedelta(seconds=int(first * remaining))
    done = (datetime.datetime.now() + rest).strftime("%H:%M")
    print(
        f"the first epoch took {datetime.timedelta(seconds=int(first))}; the {remaining} left should take "
        f"about {rest} (done around {done})",
        flush=True,
    )


SCHEDULE = ("lr", "lr_backbone", "lr_linear_proj_mult", "weight_decay", "lr_drop")


def _pretrained(args, resume: str | None, model, main: bool) -> None:
    """Fine-tuning: load what fits of --pretrained (every process alike), print what was
    skipped. A checkpoint to resume from wins: it already holds the fine-tuned weights."""
    if resume:
        if main:
            print(
                f"--resume {resume} given: continuing that run; --pretrained {args.pretrained} is not loaded",
                flush=True,
            )
        return
    try:
        summary = load_matching(model, args.pretrained)
    except UserError as e:
        raise CheckpointError(f"--pretrained {e}") from None
    if main:
        print(f"pretrained: {summary}", flush=True)


def _resume(path: str, model, optimizer, scheduler, args) -> tuple:
    """Loads a checkpoint into the model, and when it holds them (a ddetr or official
    training checkpoint) into the optimiser and scheduler; returns (the epoch to start at,
    the schedule options given that differ from the checkpoint's and were applied)."""
    ckpt = read_checkpoint(path)
    saved = ckpt["args"]
    check_fits(saved, args, path)
    load_strict(model, ckpt["model"], path)
    if not ("optimizer" in ckpt and "lr_scheduler" in ckpt and "epoch" in ckpt):
        return 0, []
    fresh = [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups]  # from these options
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["lr_scheduler"])
    changed = [k for k in SCHEDULE if saved.get(k) is not None and saved[k] != getattr(args, k)]
    if changed:  # the options given win: the schedule as if they had been given from the start
        scheduler.step_size = max(1, args.lr_drop)
        scheduler.base_lrs = [lr for lr, _ in fresh]
        factor = scheduler.gamma ** (scheduler.last_epoch // scheduler.step_size)
        for g, (lr, wd) in zip(optimizer.param_groups, fresh):
            g["initial_lr"], g["lr"], g["weight_decay"] = lr, lr * factor, wd
    return ckpt["epoch"] + 1, [f"{flag(k)} {getattr(args, k)} (the checkpoint's: {saved[k]})" for k in changed]


def _log_epoch(
    args, log_path: str, epoch: int, train_stats: dict, test_stats: dict, n_parameters: int, elapsed: float
) -> dict | None:
    """Appends the epoch to log.txt and redraws the training curve; after an evaluation also
    writes metrics.json and returns those metrics."""
    summary = test_stats.pop("coco_summary", None)
    log = {
        "epoch": epoch,
        **{f"train_{k}": v for k, v in train_stats.items()},
        **{f"test_{k}": v for k, v in test_stats.items()},
        "n_parameters": n_parameters,
        "time": round(elapsed, 1),
    }
    append_line(log_path, json.dumps(log))
    curve = draw_training_curve(read_log(log_path))
    atomic_write(os.path.join(args.output_dir, CURVE), lambda f: curve.save(f, format="PNG"))
    if "AP" not in test_stats:
        return None
    metrics = {"epoch": epoch, **{k: v for k, v in test_stats.items() if k != "loss"}}
    write_metrics(args.output_dir, metrics)
    if not args.quiet:
        print(
            f"epoch {epoch + 1}: AP {metrics['AP']:.3f}  AP50 {metrics['AP50']:.3f}  AP75 {metrics['AP75']:.3f}",
            flush=True,
        )
        if args.verbose and summary:
            print(summary, end="", flush=True)
    return metrics


def read_log(path: str) -> list:
    """The epochs of log.txt; a resumed run appends to it, so a later line for the same epoch
    replaces an earlier one. A line that is not an epoch's entry (cut by a kill) is skipped."""
    epochs = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("epoch"), int):
                epochs[entry["epoch"]] = entry
    return [epochs[e] for e in sorted(epochs)]
