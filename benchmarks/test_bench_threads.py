"""CPU thread scaling of the op at the encoder shape: ddetr at one thread and at every
thread torch was given, with the speed-up over one thread recorded in the extra info."""
import pytest
import torch

from conftest import run_case
from shapes import op_inputs, op_work
from test_bench_op import impl_fn

ALL_THREADS = torch.get_num_threads()  # as the session started (OMP_NUM_THREADS or cores)
_one_thread_median: dict = {}


@pytest.mark.skipif(ALL_THREADS < 2, reason="one thread only")
@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
@pytest.mark.parametrize("threads", [1, ALL_THREADS])  # one thread first: the ratio needs it
def test_op_threads(benchmark, threads, mode):
    inputs = op_inputs("encoder", 1, "cpu", torch.float32, requires_grad=mode != "forward")
    fn = impl_fn("ddetr", inputs, backward=mode != "forward")
    key = ("threads", "encoder", mode, "cpu", "float32", "N=1", f"{threads} of {ALL_THREADS}")
    torch.set_num_threads(threads)
    try:
        run_case(benchmark, key, "ddetr", fn, "cpu", rounds=10, extra=op_work(inputs))
    finally:
        torch.set_num_threads(ALL_THREADS)
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # smoke run
        return
    if threads == 1:
        _one_thread_median[mode] = stats.stats.median
    elif mode in _one_thread_median:
        benchmark.extra_info["speedup_vs_one_thread"] = _one_thread_median[mode] / stats.stats.median
