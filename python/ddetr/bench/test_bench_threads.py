"""CPU thread scaling of the op at the encoder shape (and its spreads): ddetr at one thread and
at every thread torch was given, with the speed-up over one thread in the extra info."""

import statistics
import time

import pytest
import torch

from ddetr.bench.harness import run_case
from ddetr.bench.shapes import SPREADS, op_inputs, op_work
from ddetr.bench.test_bench_op import impl_fn

ALL_THREADS = torch.get_num_threads()  # as the session started (OMP_NUM_THREADS or cores)


def interleaved_speedup(fn, threads, rounds):
    """Median time at one thread over median time at `threads`, the two alternating round by
    round: on a shared machine whose speed drifts over minutes, timing the two one after the
    other would measure the drift as much as the threads."""
    times = {1: [], threads: []}
    for _ in range(rounds):
        for n in times:
            torch.set_num_threads(n)
            start = time.perf_counter()
            fn()
            times[n].append(time.perf_counter() - start)
    return statistics.median(times[1]) / statistics.median(times[threads])


@pytest.mark.skipif(ALL_THREADS < 2, reason="one thread only")
@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
@pytest.mark.parametrize("threads", [1, ALL_THREADS])
@pytest.mark.parametrize("shape", ["encoder"] + [f"encoder-spread/{s}" for s in SPREADS])
def test_op_threads(benchmark, shape, threads, mode):
    inputs = op_inputs(shape, 1, "cpu", torch.float32, requires_grad=mode != "forward")
    fn = impl_fn("ddetr", inputs, backward=mode != "forward")
    key = ("threads", shape, mode, "cpu", "float32", "N=1", f"{threads} of {ALL_THREADS}")
    try:
        torch.set_num_threads(threads)
        run_case(benchmark, key, "ddetr", fn, "cpu", rounds=10, extra=op_work(inputs))
        if threads > 1 and not benchmark.disabled:
            benchmark.extra_info["speedup_vs_one_thread"] = interleaved_speedup(fn, threads, 30)
    finally:
        torch.set_num_threads(ALL_THREADS)
