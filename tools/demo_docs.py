"""Regenerates the README's demo figures from one full `ddetr demo` run, as a user runs it:
docs/demo_prediction.png (the first validation picture, with sampling points),
docs/demo_training_curve.png and docs/demo_run.md (the machine, the wall time, AP and AP50).

    .venv/bin/python tools/demo_docs.py [--output-dir DIR] [demo options ...]

Run it with nothing else on the machine: the time it records is the user's first impression.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


def cpu() -> str:
    """This machine as report.py names the machines of benchmark results."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from report import describe_cpu

    fields = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return describe_cpu(
        fields.get("model name", platform.processor()),
        fields.get("cpu family", "?"),
        fields.get("model", "?"),
        fields.get("flags", "").split(),
        f"{os.cpu_count()} cores",
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=os.path.join(ROOT, "runs", "demo-docs"))
    args, demo_args = parser.parse_known_args(argv)
    if os.path.exists(args.output_dir):
        shutil.rmtree(args.output_dir)  # a full run from scratch, data generation included
    command = [sys.executable, "-m", "ddetr", "demo", "--output-dir", args.output_dir, *demo_args]
    t0 = time.time()
    subprocess.run(command, check=True)
    wall = time.time() - t0
    with open(os.path.join(args.output_dir, "demo_summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    pictures = sorted(glob.glob(os.path.join(args.output_dir, "predictions", "*.png")))
    if not pictures:
        sys.exit(f"demo_docs: no pictures under {args.output_dir}/predictions")
    shutil.copyfile(pictures[0], os.path.join(DOCS, "demo_prediction.png"))
    shutil.copyfile(summary["training_curve"], os.path.join(DOCS, "demo_training_curve.png"))
    import torch

    lines = [
        "# The demo run behind the README's pictures",
        "",
        "- command: `" + " ".join(["python -m ddetr demo", *demo_args]) + "`",
        f"- machine: {cpu()}, torch {torch.__version__}",
        f"- date: {time.strftime('%Y-%m-%d', time.gmtime())}",
        f"- wall time, from the command to its summary line: {wall / 60:.1f} min",
        f"- AP {summary['AP']:.3f}, AP50 {summary['AP50']:.3f} on the validation images",
        "",
        "Regenerate with `.venv/bin/python tools/demo_docs.py` on an idle machine.",
        "",
    ]
    with open(os.path.join(DOCS, "demo_run.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
