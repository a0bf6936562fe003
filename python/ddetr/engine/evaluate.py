"""COCO box evaluation with pycocotools, merged across processes, and `ddetr eval`.

Each process collects its detections; `CocoEvaluator.summarize` gathers them (a
DistributedSampler pads the last batch with repeated images: those are deduplicated by
image id), and COCOeval runs once, on the main process, over the images seen."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os

import torch

from ..data.check import check_images, require_usable
from ..data.collate import move_targets
from ..weights import model_from_checkpoint
from . import distributed as D
from . import precision
from .build import build_datasets, build_loader
from .options import from_checkpoint
from .progress import Progress
from .runner import InferenceRunner, parse_dtype

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def to_coco_detections(results: dict, label_to_category: dict | None = None) -> list:
    """{image_id: {'scores', 'labels', 'boxes' (absolute xyxy)}} -> COCO result entries."""
    out = []
    for image_id, r in results.items():
        boxes = r["boxes"].detach().float().cpu()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
        for box, score, label in zip(xywh, r["scores"].tolist(), r["labels"].tolist()):
            cat = label_to_category.get(int(label)) if label_to_category else int(label)
            if cat is None:  # a class with no category (e.g. COCO's unused ids)
                continue
            out.append(
                {
                    "image_id": int(image_id),
                    "category_id": cat,
                    "bbox": [round(v, 3) for v in box],
                    "score": float(score),
                }
            )
    return out


def coco_metrics(coco_gt, detections: list, image_ids=None) -> tuple:
    """(metrics dict, COCOeval text summary) of `detections` against `coco_gt`."""
    from pycocotools.cocoeval import COCOeval

    image_ids = sorted(coco_gt.getImgIds() if image_ids is None else set(image_ids))
    if not detections:  # loadRes rejects an empty list; nothing detected scores zero
        return dict.fromkeys(METRIC_NAMES, 0.0), "no detections\n"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval reports -1 where a size range has no ground truth
    return {k: float(v) for k, v in zip(METRIC_NAMES, ev.stats)}, buf.getvalue()


class CocoEvaluator:
    def __init__(self, coco_gt, label_to_category: dict | None = None):
        self.coco_gt = coco_gt
        self.label_to_category = label_to_category
        self.detections = {}  # image id -> its COCO result entries
        self.summary = ""

    def update(self, results: dict) -> None:
        for image_id, r in results.items():
            # an image seen twice (padding of a distributed sampler) counts once
            self.detections.setdefault(int(image_id), to_coco_detections({image_id: r}, self.label_to_category))

    def summarize(self) -> dict | None:
        """Metrics on the main process (None on the others)."""
        gathered = D.all_gather_object(self.detections)
        if not D.is_main_process():
            return None
        merged = {}
        for part in gathered:
            for image_id, dets in part.items():
                merged.setdefault(image_id, dets)
        dets = [d for v in merged.values() for d in v]
        metrics, self.summary = coco_metrics(self.coco_gt, dets, merged.keys())
        metrics["images"] = len(merged)
        return metrics


@torch.no_grad()
def evaluate(
    model, criterion, postprocessors, loader, coco_gt, device, label_to_category=None, amp: bool = False, progress=None
) -> dict:
    """Validation losses (averaged over batches and processes) and COCO metrics (on the
    main process; empty dict elsewhere). `model`: a module (set to eval mode here) or a
    callable with its interface (an InferenceRunner)."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    if criterion is not None:
        criterion.eval()
    evaluator = CocoEvaluator(coco_gt, label_to_category)
    sums, n = {}, 0
    for i, (samples, targets) in enumerate(loader):
        samples = samples.to(device)
        targets = move_targets(targets, device)
        outputs = precision.forward(model, samples, amp, device)
        if criterion is not None:
            losses = D.reduce_dict({"loss": criterion.weighted_total(criterion(outputs, targets)).detach()})
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
        sizes = torch.stack([t["orig_size"] for t in targets])
        results = postprocessors["bbox"](outputs, sizes)
        evaluator.update({int(t["image_id"]): r for t, r in zip(targets, results)})
        if progress is not None:
            progress.update(i + 1, {k: v / max(n, 1) for k, v in sums.items()})
    if progress is not None:
        progress.close()
    metrics = evaluator.summarize()
    stats = {k: v / max(n, 1) for k, v in sums.items()}
    if metrics is not None:
        stats.update(metrics)
        stats["coco_summary"] = evaluator.summary
    return {k: v for k, v in stats.items() if not (isinstance(v, float) and math.isnan(v))}


def write_metrics(output_dir: str, metrics: dict) -> str:
    """<output_dir>/metrics.json, replaced whole (a reader never sees half a file)."""
    path = os.path.join(output_dir, "metrics.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    os.replace(tmp, path)
    return path


def run_eval(args) -> dict:
    """`ddetr eval`: a checkpoint on the validation set; writes metrics.json (main process).
    The image size and detections kept default to those the checkpoint was trained with."""
    dist = D.init_distributed(args.device)
    try:
        model, post, saved = model_from_checkpoint(args.checkpoint, dist.device, args.num_select)
        dtype = parse_dtype("bfloat16" if args.amp else args.dtype)
        args.image_size = from_checkpoint(args.image_size, saved, "image_size")
        _, val_set = build_datasets(args, need_train=False)
        require_usable(val_set, "val")
        check_images(val_set)
        loader = build_loader(val_set, args.batch_size, False, dist, 0, args.num_workers)
        bar = Progress(len(loader), "eval", enabled=dist.is_main and not args.quiet, print_freq=args.print_freq)
        log = print if dist.is_main and not args.quiet else (lambda msg: None)
        model = InferenceRunner(model, dtype, args.compile, len(loader), log)
        # labels -> category ids as in training (the checkpoint's data set), else the val set's
        trained = (saved.get("dataset") or {}).get("label_to_category")
        to_cat = {int(k): int(v) for k, v in trained.items()} if trained else val_set.label_to_category
        stats = evaluate(model, None, post, loader, val_set.coco, dist.device, to_cat, False, bar)
        if not dist.is_main:
            return {}
        summary = stats.pop("coco_summary", "")
        os.makedirs(args.output_dir, exist_ok=True)
        run = dict(dtype=str(dtype).split(".")[-1], compiled=model.compiled is not None)
        metrics = {"checkpoint": os.path.abspath(args.checkpoint), **run, **stats}
        write_metrics(args.output_dir, metrics)
        if not args.quiet:
            print(summary, end="")
        return metrics
    finally:
        D.cleanup()
