"""The training step of the full model (ResNet-50, default variant, batch 2): ddetr eager
float32, --amp, --compile and both, against HF transformers' DeformableDetrForObjectDetection
with the same weights (auxiliary losses on), timed in alternating rounds so a shared
machine's drift hits all alike. The compiled cases compile first (timed apart). Prints each
round, the medians, the speed-ups over HF and over eager float32, and each case's first loss.

    python benchmarks/compare_train.py --size 800 1066 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ddetr.bench import test_bench_model as B  # the benchmark's inputs and steps
from ddetr.models import build


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=B.SIZE, metavar=("H", "W"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=[c[0] for c in B.TRAIN_CASES])
    args = parser.parse_args()
    B.SIZE = tuple(args.size)
    images, targets = B._inputs(2, "cpu")
    steps = {}
    for name, amp, compile in B.TRAIN_CASES:
        if name not in args.cases:
            continue
        torch.manual_seed(0)
        model, criterion, _ = build()
        model.train()
        if name == "hf":
            steps[name] = B.hf_train_step(model, images, targets)
            continue
        steps[name] = B.train_step(model, criterion, images, targets, "cpu", amp, compile)
        t0 = time.perf_counter()
        loss = steps[name]()
        print(f"{name}: first step (compiles where compiled) {time.perf_counter() - t0:.1f} s, loss {float(loss):.5f}")
    times = {name: [] for name in steps}
    for r in range(args.rounds):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}: " + "  ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
    med = {n: statistics.median(t) for n, t in times.items()}
    for n, m in med.items():
        vs = [f"{med['hf'] / m:.2f}x HF" if "hf" in med and n != "hf" else ""]
        vs.append(f"{med['eager'] / m:.2f}x eager float32" if "eager" in med and n not in ("hf", "eager") else "")
        print(f"{n:>13}: median {m:.2f} s  " + "  ".join(v for v in vs if v))


if __name__ == "__main__":
    main()
