"""Shared pieces of the benchmark suite: devices, dtypes, peak memory, and the same-run
comparison of ddetr against the pure-PyTorch reference.

Run: `ddetr bench --output results.json` (the op, module and model suites; see
`ddetr bench -h`). Smoke run (each case once, no timing): `ddetr bench --smoke`.
"""

from __future__ import annotations

import os
import platform

import pytest
import torch

import ddetr  # noqa: F401  (loads the op)


def devices():
    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    return out


def dtypes(device):
    if device == "cpu":
        return [torch.float32]
    return [torch.float32, torch.float16, torch.bfloat16]


DEVICE_DTYPES = [pytest.param(dev, dt, id=f"{dev}-{str(dt).split('.')[-1]}") for dev in devices() for dt in dtypes(dev)]


def cpu_model() -> str:
    try:  # Linux names the model here; platform.processor() is often empty
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_model()}, {os.cpu_count()} cores"


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory_bytes(fn, device) -> int:
    """Peak bytes allocated by torch while `fn` runs, above what was allocated before."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    # CPU: replay the profiler's allocation (op self memory) and free ([memory]) events in
    # time order; the running sum's maximum is the peak. An op whose self memory is negative
    # freed scratch its callees allocated: counted at its end, so the scratch shows in the peak.
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []
    for e in prof.events():
        delta = e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        if delta:
            events.append((e.time_range.end if delta < 0 else e.time_range.start, delta))
    current = peak = 0
    for _, delta in sorted(events):
        current += delta
        peak = max(peak, current)
    return peak


# Reference medians measured earlier in this run, keyed by case, for the speed-up ratio.
_reference_median: dict = {}


def run_case(benchmark, key, impl, fn, device, rounds, extra=None):
    """Times `fn` with pytest-benchmark, records peak memory and, for ddetr, the speed-up
    over the reference measured in the same run (the reference cases run first)."""
    benchmark.group = "/".join(str(k) for k in key)
    benchmark.extra_info.update(extra or {})
    benchmark.extra_info.update(
        impl=impl, device=device_name(device), threads=torch.get_num_threads(), torch=torch.__version__
    )

    def timed():
        fn()
        sync(device)

    if benchmark.disabled:  # smoke run (--benchmark-disable): each case once, no figures
        benchmark.pedantic(timed, rounds=1, iterations=1)
        return
    fn()  # warm up (allocator, lazy initialisation), then measure memory once
    sync(device)
    benchmark.extra_info["peak_memory_bytes"] = peak_memory_bytes(fn, device)
    benchmark.pedantic(timed, rounds=rounds, warmup_rounds=1 if rounds > 1 else 0, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # nothing was timed
        return
    median = stats.stats.median
    if impl == "reference":
        _reference_median[key] = (median, benchmark.extra_info["peak_memory_bytes"])
    elif key in _reference_median:
        ref_median, ref_mem = _reference_median[key]
        benchmark.extra_info["speedup_vs_reference"] = ref_median / median
        benchmark.extra_info["reference_median_s"] = ref_median
        benchmark.extra_info["reference_peak_memory_bytes"] = ref_mem
