"""Detections on image files with a trained checkpoint: JSON and annotated PNGs."""

from __future__ import annotations

import json
import os

import torch

from ..data.coco import DataError, load_image
from ..data.transforms import make_transforms
from ..visualize import SamplingRecorder, draw_prediction
from ..weights import model_from_checkpoint
from .distributed import resolve_device
from .options import from_checkpoint
from .runner import InferenceRunner, parse_dtype


@torch.no_grad()
def predict(
    images: list,
    checkpoint: str,
    output_dir: str,
    threshold: float = 0.3,
    device: str = "cpu",
    image_size: int | None = None,
    show_sampling_points: bool = False,
    top_queries: int = 3,
    quiet: bool = False,
    dtype: str = "float32",
    compile="auto",
) -> list:
    """Run the model on each image; writes <stem>.png (the image enlarged when small, boxes,
    labels and scores; with `show_sampling_points` where the best queries sample) and
    detections.json (boxes in the image's pixels) to `output_dir`, returns the detections
    per image. The model runs as engine/runner.py says (`dtype`, `compile`: True, False or
    "auto"); with `show_sampling_points` uncompiled, since the points are recorded by a hook."""
    device = resolve_device(device)
    model, post, saved = model_from_checkpoint(checkpoint, device)
    if show_sampling_points and compile is True and not quiet:
        print("note: --show-sampling-points runs the model uncompiled (its points are recorded by a hook)")
    log = (lambda msg: None) if quiet else print
    model = InferenceRunner(model, parse_dtype(dtype), False if show_sampling_points else compile, len(images), log)
    info = saved.get("dataset") or {}
    names = {int(k): v for k, v in (info.get("label_names") or {}).items()}
    to_cat = {int(k): v for k, v in (info.get("label_to_category") or {}).items()}
    transform = make_transforms("val", int(from_checkpoint(image_size, saved, "image_size")))
    recorder = SamplingRecorder(model.model.transformer.decoder.layers[-1].cross_attn) if show_sampling_points else None
    os.makedirs(output_dir, exist_ok=True)
    results, failed = [], []
    outputs_png = _picture_paths(images, output_dir)
    try:
        for n, path in enumerate(images):
            try:
                image = load_image(path, n)
            except DataError as e:  # the other images' detections are still written
                failed.append(str(e))
                results.append({"image": path, "error": str(e), "detections": []})
                continue
            x, _ = transform(image, {})
            outputs = model([x.to(device)])
            r = post["bbox"](outputs, torch.tensor([[image.height, image.width]], device=device))[0]
            dets = []
            for score, label, box in zip(r["scores"].tolist(), r["labels"].tolist(), r["boxes"].tolist()):
                if score >= threshold:
                    dets.append(
                        {
                            "label": label,
                            "category_id": to_cat.get(label, label),
                            "name": names.get(label, str(label)),
                            "score": round(score, 4),
                            "box": [round(v, 2) for v in box],
                        }
                    )
            points = None
            if recorder is not None and recorder.loc is not None:
                points = _top_query_points(outputs, recorder, image, top_queries, threshold)
            picture = draw_prediction(image, dets, points)
            out_png = outputs_png[n]
            picture.save(out_png)
            results.append({"image": path, "output": out_png, "detections": dets})
            if not quiet:
                found = ", ".join(f"{d['name']} {d['score']:.2f}" for d in dets[:5]) + ", ..." * (len(dets) > 5)
                print(f"{path}: {len(dets)} detection(s){f' ({found})' if dets else ''} -> {out_png}")
    finally:
        if recorder is not None:
            recorder.remove()
    out_json = os.path.join(output_dir, "detections.json")
    with open(out_json, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise DataError(
            f"{len(failed)} of {len(images)} image(s) could not be read, the first: {failed[0]}{more}; "
            f"{out_json} holds the others' detections"
        )
    return results


def _picture_paths(images: list, output_dir: str) -> list:
    """<stem>.png per input, unique: a name taken (two inputs a/pic.png and b/pic.png), or
    the input itself, gets _2, _3, ... ."""
    taken = {os.path.abspath(p) for p in images}
    out = []
    for path in images:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, k = os.path.join(output_dir, f"{stem}.png"), 1
        while os.path.abspath(name) in taken:
            k += 1
            name = os.path.join(output_dir, f"{stem}_{k}.png")
        taken.add(os.path.abspath(name))
        out.append(name)
    return out


def _top_query_points(outputs, recorder, image, k: int, threshold: float, per_query: int = 32) -> list:
    """The sampling points of the best-scoring queries (up to k above the threshold, at
    least one): for each, its `per_query` most weighted points over heads, levels, points."""
    score, label = outputs["pred_logits"][0].sigmoid().max(-1)
    order = score.argsort(descending=True)
    chosen = [q for q in order[:k].tolist() if score[q] >= threshold] or order[:1].tolist()
    loc, w = recorder.loc[0].float(), recorder.weights[0].float()  # (Q, M, L, P, 2), (Q, M, L, P)
    scale = torch.tensor([image.width, image.height], dtype=loc.dtype, device=loc.device)
    out = []
    for q in chosen:
        wq, xy = w[q].reshape(-1), loc[q].reshape(-1, 2) * scale
        top = wq.topk(min(per_query, len(wq))).indices
        out.append((int(label[q]), xy[top].cpu(), wq[top].cpu()))
    return out
