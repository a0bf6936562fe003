"""`ddetr demo`: synthetic data, a small model trained on the CPU, evaluation, pictures.

The preset is chosen to learn something real within minutes on two CPU cores: 128-192 px
images (seen at short side 128) of 4 clearly distinct shapes, a random-init ResNet-18 (no
weights can be downloaded; its stem and layer1 stay frozen as in the official recipe: random
but informative features, and no backward pass through the two costliest layers), 3 feature
levels, hidden size 64, 2 + 2 layers, 30 queries, box refinement. Measured on the 2-core
development machine: AP50 ~0.5 after 10 epochs, about 22 s an epoch when the machine is
otherwise idle.
"""
from __future__ import annotations

import glob
import json
import os
import time

DEMO_DATA = dict(num_train=600, num_val=100, num_classes=4, min_image_size=128, max_image_size=192,
                 min_objects=1, max_objects=3, min_object_frac=0.2, max_object_frac=0.5, seed=0)

DEMO_PRESET = dict(
    backbone="resnet18", train_full_backbone=False, num_feature_levels=3, hidden_dim=64, nheads=8,
    enc_layers=2, dec_layers=2, dim_feedforward=256, num_queries=30, dropout=0.0,
    with_box_refine=True, dec_n_points=4, enc_n_points=4,
    lr=4e-4, lr_backbone=2e-4, weight_decay=1e-4, batch_size=8, epochs=24, lr_drop=20,
    image_size=128, eval_every=4, num_workers=0, num_select=30,
)


def run_demo(args) -> dict:
    from ..data.synthetic import make_synthetic
    from .predict import predict
    from .train import train

    t0 = time.time()
    out = args.output_dir
    data = dict(DEMO_DATA)
    for k in ("num_train", "num_val"):
        if getattr(args, k, None):
            data[k] = getattr(args, k)
    root = make_synthetic(os.path.join(out, "data"), **data)
    args.coco_path = root
    print(f"synthetic data: {data['num_train']} training and {data['num_val']} validation images in {root}",
          flush=True)
    metrics = train(args)
    val_images = sorted(glob.glob(os.path.join(root, "val2017", "*.png")))[:args.num_pictures]
    pics = os.path.join(out, "predictions")
    predict(val_images, os.path.join(out, "checkpoint.pth"), pics, threshold=0.3,
            device=args.device if args.device not in (None, "auto") else "cpu",
            show_sampling_points=True, quiet=True)
    elapsed = time.time() - t0
    summary = {"AP": metrics.get("AP"), "AP50": metrics.get("AP50"), "seconds": round(elapsed, 1),
               "metrics": os.path.join(out, "metrics.json"), "checkpoint": os.path.join(out, "checkpoint.pth"),
               "predictions": pics}
    with open(os.path.join(out, "demo_summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print(f"demo done in {elapsed / 60:.1f} min: AP {summary['AP']:.3f}, AP50 {summary['AP50']:.3f}\n"
          f"  metrics     {summary['metrics']}\n  checkpoint  {summary['checkpoint']}\n"
          f"  pictures    {pics}/", flush=True)
    return summary
