"""Renders pytest-benchmark JSON files: tables (devices side by side), the machine each file
came from, and the roofline note, always from the committed result files, never by hand.

    python benchmarks/report.py benchmarks/results/*.json           # one table, every case
    python benchmarks/report.py --update README.md benchmarks/README.md
    python benchmarks/report.py --check README.md benchmarks/README.md   # CI: docs up to date

`--update` rewrites each generated block of a markdown file, between
`<!-- report KIND FILE [PREFIX,...] -->` and `<!-- /report -->`: KIND is `table` (the cases of
FILE whose names start with a PREFIX), `machine` (the machine, torch and threads FILE was
measured with) or `roofline` (the op's encoder forward against the machine's own peaks,
measured in the same file by test_bench_machine.py). So a figure always sits under the
heading of the machine that produced it.

Table cells: median time, the speed-up over the pure-PyTorch reference measured in the same
run (thread cases: over one thread; model cases: over ddetr eager float32, HF eager float32
and the best HF case; HF-models cases: over HF eager), and the peak memory against the
reference's.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent  # block paths are relative to benchmarks/

# Speed-ups over other cases of the same run, as they are labelled in a cell.
SPEEDUPS = [
    ("speedup_vs_eager_float32", "eager fp32"),
    ("speedup_vs_hf_eager_float32", "HF eager fp32"),
    ("speedup_vs_hf", "HF eager fp32"),
    ("speedup_vs_best_hf", "best HF"),
    ("speedup_vs_hf_eager", "HF eager"),
    ("speedup_vs_kernelized_eager", "kernelized eager"),  # test_bench_hf_models.py's compiled case
    ("time_vs_smallest_value", "the 4 MiB value's time"),  # test_bench_op.py's value sweep: a slow-down
]
# Instruction sets that decide the CPU kernels' and bfloat16's speed, as cpuinfo names them.
ISA_FLAGS = [("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX")]

_BLOCK = re.compile(r"(<!-- report (\w+) (\S+)(?: (\S+))? -->\n)(.*?)(<!-- /report -->)", re.S)


def _data(path) -> dict:
    path = Path(path)  # as given (from the command line), else relative to benchmarks/ (blocks)
    return json.loads((path if path.exists() else HERE / path).read_text())


def machine(data: dict) -> str:
    """'AMD EPYC (family 26 model 2; AVX2, AVX-512, AVX512-BF16, no AMX; L2 1 MiB, L3 32 MiB),
    2 threads, torch 2.13.0+cpu', or the GPU's name for CUDA runs. The caches show where the
    file recorded them (the suite's machine-info hook, harness.py)."""
    info = next((b.get("extra_info", {}) for b in data["benchmarks"] if b.get("extra_info")), {})
    machine_info = data.get("machine_info", {})
    cpu = {**machine_info.get("cpu", {}), **machine_info.get("cpu_identity", {})}
    device = info.get("device", cpu.get("brand_raw", "unknown device"))
    if "cuda" in json.dumps([b["name"] for b in data["benchmarks"]]) and "EPYC" not in device:
        return f"{device}, torch {info.get('torch', '?')}"
    return describe_cpu(
        device.split(",")[0],
        cpu.get("family", "?"),
        cpu.get("model", "?"),
        machine_info.get("cpu", {}).get("flags", []),
        f"{info.get('threads', cpu.get('count', '?'))} threads, torch {info.get('torch', '?')}",
        machine_info.get("cpu_caches", {}),
    )


def fmt_bytes(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 2**10:g} KiB"


def describe_cpu(brand: str, family, model, flags, rest: str, caches: dict | None = None) -> str:
    """'<brand> (family F model M; <the instruction sets that matter>[; L2 .., L3 ..]), <rest>'."""
    flags = set(flags)
    isa = ["AVX2"] if "avx2" in flags else ["no AVX2"]
    isa += [name for flag, name in ISA_FLAGS if flag in flags]
    if "amx_bf16" not in flags:
        isa.append("no AMX")
    levels = ", ".join(f"{k} {fmt_bytes(caches[k])}" for k in ("L2", "L3") if k in (caches or {}))
    return f"{brand} (family {family} model {model}; {', '.join(isa)}{'; ' + levels if levels else ''}), {rest}"


def load(path):
    data = _data(path)
    rows = {}
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if info.get("impl", "ddetr") not in ("ddetr", "hf", "hf-kernelized"):  # peers show in the speed-ups
            continue
        rows[b["group"] or b["name"]] = (b["stats"]["median"], info)
    return machine(data), rows


def fmt_time(s):
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def fmt_mem(n):
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def cell(median, info) -> str:
    out = fmt_time(median)
    if info.get("speedup_vs_reference"):
        out += f" / {info['speedup_vs_reference']:.1f}x"
    if info.get("speedup_vs_one_thread"):
        out += f" / {info['speedup_vs_one_thread']:.2f}x over 1 thread"
    for key, what in SPEEDUPS:
        if info.get(key):
            out += f" / {info[key]:.1f}x {what}"
    if "peak_memory_bytes" in info:
        out += f" / {fmt_mem(info['peak_memory_bytes'])}"
        if "reference_peak_memory_bytes" in info:
            out += f" ({fmt_mem(info['reference_peak_memory_bytes'])})"
    return out


def render(paths, prefixes=None) -> str:
    runs = [load(p) for p in paths]
    cases = sorted({c for _, rows in runs for c in rows if not prefixes or c.startswith(tuple(prefixes))})
    header = ["case"] + [f"{dev}: ddetr / speed-up / memory (ref)" for dev, _ in runs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case in cases:
        cells = [case] + [cell(*rows[case]) if case in rows else "" for _, rows in runs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def roofline(path) -> str:
    """The op's encoder forward (float32, all threads) against the same run's measured
    peaks: sgemm GFLOP/s and copy bandwidth (test_bench_machine.py)."""
    data = _data(path)
    by_group = {b["group"] or b["name"]: b for b in data["benchmarks"]}
    op = by_group.get("op/encoder/forward/cpu/float32/N=1")
    gemm = next((b for g, b in by_group.items() if g.startswith("machine/sgemm")), None)
    copy = next((b for g, b in by_group.items() if g.startswith("machine/copy")), None)
    if not (op and gemm and copy and "flops_fwd" in op.get("extra_info", {})):
        return (
            f"(`{path}` has no roofline: it needs the op's encoder forward with its work counts and the "
            "machine's own peaks, `benchmarks/test_bench_machine.py`, in the same run.)"
        )
    work, t = op["extra_info"], op["stats"]["median"]
    gflops = work["flops_fwd"] / t / 1e9
    gbs = work["bytes_fwd"] / t / 1e9
    peak_flops = gemm["extra_info"]["gflops"]
    peak_gbs = copy["extra_info"]["gbytes_per_s"]
    return (
        f"Encoder shape, forward, {work['points'] / 1e6:.2f} M sampling points in {fmt_time(t)}: "
        f"{gflops:.0f} GFLOP/s of useful arithmetic, {100 * gflops / peak_flops:.0f}% of the "
        f"{peak_flops:.0f} GFLOP/s sgemm reaches in the same run, and its compulsory bytes (inputs once, "
        f"output once) at {gbs:.1f} GB/s, {100 * gbs / peak_gbs:.0f}% of the {peak_gbs:.0f} GB/s copy "
        f"bandwidth; the {work['gathered_bytes_fwd'] / 1e9:.1f} GB of corner rows it gathers come mostly "
        f"from cache. ({machine(data)}.)"
    )


def block(kind: str, path: str, prefixes: str | None) -> str:
    if kind == "table":
        return render([path], prefixes.split(",") if prefixes else None)
    if kind == "machine":
        return machine(_data(path))
    if kind == "roofline":
        return roofline(path)
    raise SystemExit(f"report.py: unknown block kind {kind!r} (table, machine, roofline)")


def update(text: str) -> str:
    return _BLOCK.sub(lambda m: m.group(1) + block(m.group(2), m.group(3), m.group(4)) + "\n" + m.group(6), text)


def main(argv) -> int:
    if argv and argv[0] in ("--update", "--check"):
        stale = []
        for name in argv[1:]:
            path = Path(name)
            text = path.read_text()
            new = update(text)
            if new != text:
                stale.append(name)
                if argv[0] == "--update":
                    path.write_text(new)
        if argv[0] == "--check" and stale:
            print(f"report.py: generated blocks out of date in {', '.join(stale)}: run report.py --update")
            return 1
        return 0
    if not argv:
        print(__doc__)
        return 2
    print(render(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
