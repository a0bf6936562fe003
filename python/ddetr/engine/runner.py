"""How `ddetr eval` and `ddetr predict` run a trained model: through
ddetr.optimize_for_inference (frozen batch norms folded into the convolutions, `--dtype`),
compiled with torch.compile when `--compile` says so or, by default (`auto`), when the
images still to run are expected to save more time than compiling costs."""

from __future__ import annotations

import time

import torch

from ..errors import UserError
from ..inference import optimize_for_inference
from ..models.config import DTYPES as DTYPE_NAMES

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}

# The `auto` rule's two measured figures (benchmarks/test_bench_inference.py, ResNet-50
# model, 800 x 1066, 2-core CPU, benchmarks/results/cpu-epyc-avx512-2cores.json): compiling
# (inductor, freezing) and the first call took 73 s in float32 and 62 s in bfloat16, and the
# compiled model then ran in 76% (float32: 1.45 s against 1.90 s uncompiled) and 69%
# (bfloat16: 0.60 s against 0.87 s) of the uncompiled time. So about 165 images of that
# size repay a compile. Small models compile faster but save less per image, so the rule
# stays on the side of not compiling for them.
COMPILE_COST_S = 75.0
COMPILE_SAVES = 0.24


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UserError(f"--dtype {name}: expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


class InferenceRunner:
    """`runner(samples)` -> the model's outputs (float32), for `total` calls expected.

    compile: True compiles before the first call; False never; "auto" runs the first two
    calls uncompiled, and compiles if the calls still to come, at the second call's time,
    would save more than COMPILE_COST_S. `self.model` is the folded module that runs (hooks
    registered on it see every uncompiled call)."""

    def __init__(self, model, dtype: torch.dtype, compile, total: int, log=print):
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
        self.dtype, self.mode, self.total, self.log = dtype, compile, total, log
        self._source = model  # the float32 model as trained, for a later compile
        self.compiled = optimize_for_inference(model, dtype, compile=True) if compile is True else None
        # compiled from the start, no uncompiled copy is needed (nor kept in memory)
        self.eager = optimize_for_inference(model, dtype, compile=False) if self.compiled is None else None
        self.model = (self.compiled or self.eager).model
        self.calls = 0

    def __call__(self, samples) -> dict:
        self.calls += 1
        if self.compiled is not None:
            return self.compiled(samples)
        start = time.perf_counter()
        outputs = self.eager(samples)
        if self.mode == "auto" and self.calls == 2:
            self._decide(time.perf_counter() - start)
        return outputs

    def _decide(self, seconds: float) -> None:
        left = self.total - self.calls
        saving = left * seconds * COMPILE_SAVES
        if saving > COMPILE_COST_S:
            self.log(
                f"compiling the model (--compile auto: {left} more batches at {seconds:.2f} s would save "
                f"about {saving:.0f} s, compiling costs about {COMPILE_COST_S:.0f} s; --no-compile skips it)"
            )
            self.compiled = optimize_for_inference(self._source, self.dtype, compile=True)

    def __repr__(self) -> str:
        return f"InferenceRunner(dtype={self.dtype}, compile={self.mode}, compiled={self.compiled is not None})"
