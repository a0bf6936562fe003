"""The full model (ResNet-50, default variant) on one image: eager float32 against
optimize_for_inference in float32 and bfloat16 (and, with --hf, HF transformers'
DeformableDetr eager float32 with the same weights), timed in alternating rounds, so a
shared machine whose speed drifts over minutes drifts for all alike. Prints each round, the
medians, the speed-ups over eager (and HF) and how far each output is from eager float32.

    python benchmarks/compare_inference.py --size 800 1066 --rounds 4 [--hf]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ddetr import optimize_for_inference
from ddetr.models import build_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1066), metavar=("H", "W"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--hf", action="store_true", help="add HF transformers' model (benchmarks/hf_peer.py)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model().eval()
    with torch.no_grad():  # a box head that is not zero, so boxes depend on the features
        torch.nn.init.normal_(model.bbox_embed[0].layers[-1].weight, std=0.01)
    images = [torch.randn(3, *args.size, generator=torch.Generator().manual_seed(0))]
    runs = {"eager float32": model}
    if args.hf:
        from ddetr.bench.hf_peer import hf_inputs, hf_model

        hf, (pixel_values, pixel_mask) = hf_model(model), hf_inputs(images)

        def run_hf(_images):
            out = hf(pixel_values=pixel_values, pixel_mask=pixel_mask)
            return {"pred_logits": out.logits, "pred_boxes": out.pred_boxes}

        runs["HF eager float32"] = run_hf
    for dtype in (torch.float32, torch.bfloat16):
        fast = optimize_for_inference(model, dtype)
        t0 = time.perf_counter()
        fast(images)
        print(f"{dtype}: compile and first call {time.perf_counter() - t0:.1f} s", flush=True)
        runs[f"optimised {str(dtype).split('.')[-1]}"] = fast
    times, outs = {k: [] for k in runs}, {}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                outs[name] = fn(images)
                times[name].append(time.perf_counter() - t0)
    ref, eager = outs["eager float32"], statistics.median(times["eager float32"])
    hf_median = statistics.median(times["HF eager float32"]) if args.hf else None
    for name, ts in times.items():
        out, median = outs[name], statistics.median(ts)
        box = (out["pred_boxes"] - ref["pred_boxes"]).abs().max()
        logit = (out["pred_logits"] - ref["pred_logits"]).abs().max() / ref["pred_logits"].abs().max()
        score = (out["pred_logits"].sigmoid() - ref["pred_logits"].sigmoid()).abs().max()
        print(
            f"{name}: {' '.join(f'{t:.2f}' for t in ts)} s | median {median:.2f} s, {eager / median:.2f}x eager "
            f"| box max diff {box:.1e}, logit max rel diff {logit:.1e}, score max diff {score:.1e}"
            + (f" | {hf_median / median:.2f}x HF eager" if hf_median else "")
        )


if __name__ == "__main__":
    main()
