"""The machine's own peaks, measured in the same run as the op, for the roofline note
(report.py): float32 matrix multiply (MKL / cuBLAS) and memory copy bandwidth."""

import pytest
import torch

from conftest import devices, run_case, sync

GEMM_N = 2048
COPY_BYTES = 256 * 2**20  # far beyond any cache


@pytest.mark.parametrize("device", devices())
def test_sgemm(benchmark, device):
    a, b = (torch.randn(GEMM_N, GEMM_N, device=device) for _ in range(2))
    run_case(benchmark, ("machine", "sgemm", device, f"{GEMM_N}"), "machine", lambda: a @ b, device, rounds=10)
    if not benchmark.disabled:
        benchmark.extra_info["gflops"] = 2 * GEMM_N**3 / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("device", devices())
def test_copy(benchmark, device):
    src = torch.ones(COPY_BYTES // 4, device=device)
    dst = torch.empty_like(src)
    run_case(benchmark, ("machine", "copy", device, "256MiB"), "machine", lambda: dst.copy_(src), device, rounds=10)
    sync(device)
    if not benchmark.disabled:  # a copy reads and writes every byte once
        benchmark.extra_info["gbytes_per_s"] = 2 * COPY_BYTES / benchmark.stats.stats.median / 1e9
