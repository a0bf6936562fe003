"""Renders pytest-benchmark JSON files as one markdown table, devices side by side.

    python benchmarks/report.py benchmarks/results/*.json

Rows are cases (op shape and mode, dtype, batch; module; model, with HF transformers' peer
cases); for each file (device) the columns give the median time, the speed-up over the
pure-PyTorch reference measured in the same run (for the thread cases: over one thread;
for model cases: over ddetr eager float32, HF eager float32 and the best HF case), and the
peak memory against the reference's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Model cases' speed-ups over other cases of the same run (benchmarks/test_bench_inference.py,
# test_bench_model.py), as they are labelled in a cell.
SPEEDUPS = [
    ("speedup_vs_eager_float32", "eager fp32"),
    ("speedup_vs_hf_eager_float32", "HF eager fp32"),
    ("speedup_vs_hf", "HF eager fp32"),
    ("speedup_vs_best_hf", "best HF"),
    ("speedup_vs_kernelized_eager", "kernelized eager"),  # test_bench_hf_models.py's compiled case
]


def load(path: Path):
    data = json.loads(path.read_text())
    device = None
    rows = {}
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        device = device or info.get("device")
        if info.get("impl", "ddetr") not in ("ddetr", "hf"):  # the reference shows in ddetr's speed-up
            continue
        rows[b["group"] or b["name"]] = (b["stats"]["median"], info)
    return device or path.stem, rows


def fmt_time(s):
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def fmt_mem(n):
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def render(paths):
    runs = [load(Path(p)) for p in paths]
    cases = sorted({case for _, rows in runs for case in rows})
    header = ["case"] + [f"{dev}: ddetr / speed-up / memory (ref)" for dev, _ in runs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case in cases:
        cells = [case]
        for _, rows in runs:
            if case not in rows:
                cells.append("")
                continue
            median, info = rows[case]
            speedup = info.get("speedup_vs_reference")
            cell = fmt_time(median)
            if speedup:
                cell += f" / {speedup:.1f}x"
            if info.get("speedup_vs_one_thread"):
                cell += f" / {info['speedup_vs_one_thread']:.2f}x over 1 thread"
            for key, what in SPEEDUPS:
                if info.get(key):
                    cell += f" / {info[key]:.1f}x {what}"
            if "peak_memory_bytes" in info:
                cell += f" / {fmt_mem(info['peak_memory_bytes'])}"
                if "reference_peak_memory_bytes" in info:
                    cell += f" ({fmt_mem(info['reference_peak_memory_bytes'])})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/report.py RESULT.json [RESULT.json ...]")
    print(render(sys.argv[1:]))
