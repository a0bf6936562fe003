"""Shared pieces of the benchmark suite: devices, dtypes, peak memory, and the same-run
comparison of ddetr against the pure-PyTorch reference.

Run: `ddetr bench --output results.json` (the op, module and model suites; see
`ddetr bench -h`). Smoke run (each case once, no timing): `ddetr bench --smoke`.
"""

from __future__ import annotations

import glob
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


_SIZE_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def cpu_caches() -> dict:
    """cpu0's data and unified caches from sysfs (Linux), e.g. {"L1d": 32768, "L2": 524288,
    "L3": 33554432} in bytes; {} where sysfs does not say."""
    caches = {}
    for index in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            kind, level, size = (_read(os.path.join(index, f)) for f in ("type", "level", "size"))
        except OSError:
            continue
        number, unit = (size[:-1], size[-1]) if size[-1:] in _SIZE_UNITS else (size, "")
        if kind != "Instruction" and number.isdigit():
            caches[f"L{level}" + ("d" if kind == "Data" else "")] = int(number) * _SIZE_UNITS.get(unit, 1)
    return caches


def cpu_identity() -> dict:
    """The first processor's family, model and name from /proc/cpuinfo (Linux); {} elsewhere."""
    keys = {"cpu family": "family", "model": "model", "model name": "model_name"}
    out = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block ends
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    value = value.strip()
                    out[keys[key.strip()]] = int(value) if value.isdigit() else value
    except OSError:
        pass
    return out


def pytest_benchmark_update_machine_info(config, machine_info):
    """pytest-benchmark's hook (the suite's conftest.py files import it): the CPU's identity
    and caches beside pytest-benchmark's own machine info, for report.py's headings."""
    machine_info["cpu_identity"] = cpu_identity()
    machine_info["cpu_caches"] = cpu_caches()


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    # Linux names the model in /proc/cpuinfo; platform.processor() is often empty
    name = cpu_identity().get("model_name") or platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cores"


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
