#!/usr/bin/env bash
# Proves the CUDA half in one call on a machine with an NVIDIA GPU, writing every result
# under one folder: build from scratch, the CUDA tests, compute-sanitizer (memcheck on the op
# tests, racecheck on the backward), and the CUDA benchmark suite in float32, bfloat16 and
# float16. Made for a lent H200 (Python 3.12, torch 2.11+cu130, nvcc, cmake, ninja, pybind11,
# scikit-build-core, pytest, pytest-benchmark, scipy; no pycocotools, no network): about
# 5-8 minutes there.
#
#   bash tools/gpu_check.sh [OUT_DIR]      (default: $OUT, else ./gpu-check)
#
# Without a GPU it says so, checks that each test selection below still collects tests (so
# the script cannot rot unseen; CI runs it this way), and exits 0. Each step's log is
# OUT_DIR/<step>.log; OUT_DIR/summary.txt has one line per step; the exit status is non-zero
# when a step failed.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="$(mkdir -p "${1:-${OUT:-$root/gpu-check}}" && cd "${1:-${OUT:-$root/gpu-check}}" && pwd)"
python="${PYTHON:-python3}"
summary="$out/summary.txt"
: >"$summary"
failed=0

# Test selections, shared by the GPU run and the no-GPU self-check.
TESTS=(tests/test_cuda.py tests/test_op_abi.py tests/test_op_values.py tests/test_op_autograd.py
       tests/test_op_errors.py tests/test_op_edge.py tests/test_op_v2_cuda.py tests/test_op_v2.py
       tests/test_integrations_transformers.py)
# memcheck: every value path once (float32 and one 16-bit type), the 64-bit cases excluded
# (too slow under the sanitizer; they run unsanitized above)
MEMCHECK_K="(matches_cpu or channel_counts or non_contiguous or unaligned or outside or empty or batch_97 or one_by_one) and not float64 and not float16"
# racecheck: the backward kernels, default and deterministic (shared memory, warp sums)
RACECHECK_K="(deterministic_backward_is_bitwise_repeatable and float32) or (matches_cpu and float32)"

step() {  # step NAME SECONDS COMMAND...: runs it, logs it, records the outcome
  local name=$1 limit=$2 start rc
  shift 2
  echo "== $name: $*"
  start=$(date +%s)
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  printf '%-12s %s in %ss\n' "$name" "$([ $rc -eq 0 ] && echo ok || echo "FAILED (rc $rc)")" \
    "$(($(date +%s) - start))" | tee -a "$summary"
  tail -n 4 "$out/$name.log"
  [ $rc -eq 0 ] || failed=1
  return $rc
}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none): nothing to measure." | tee "$summary"
  # Self-check: the selections still name tests (needs an installed ddetr, as in CI).
  if "$python" -c "import ddetr" 2>/dev/null; then
    for k in "$MEMCHECK_K" "$RACECHECK_K"; do
      n=$("$python" -m pytest "${TESTS[@]}" -q --collect-only -k "$k" -p no:cacheprovider 2>/dev/null |
          grep -c '::')
      if [ "$n" -eq 0 ]; then
        echo "gpu_check: the selection '$k' collects no test" | tee -a "$summary"
        exit 1
      fi
      echo "gpu_check: selection collects $n tests: $k"
    done
    "$python" -m ddetr bench --help >/dev/null || { echo "gpu_check: ddetr bench is broken" | tee -a "$summary"; exit 1; }
  fi
  exit 0
fi

nvidia-smi >"$out/nvidia-smi.txt" 2>&1
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" |
  tee "$out/torch.txt"

# 1. Build from scratch, exactly as a user does (no pycocotools there, no network: --no-deps),
# into a venv that sees the machine's torch and tools (a system Python may refuse pip).
rm -rf build
if "$python" -m venv --system-site-packages build/gpu-venv >/dev/null 2>&1; then
  python="$root/build/gpu-venv/bin/python"
fi
step build 600 "$python" -m pip install -v --no-build-isolation --no-deps . || {
  echo "gpu_check: the build failed, see $out/build.log"
  exit 1
}
step build_info 120 "$python" -c "import json, ddetr; print(json.dumps(ddetr.build_info(), indent=1))"
cp "$out/build_info.log" "$out/build_info.json"

# 2. The CUDA tests and the op tests, the 64-bit cases included.
step tests 900 "$python" -m pytest "${TESTS[@]}" -q -p no:cacheprovider \
  --junitxml="$out/tests.xml"

# 3. compute-sanitizer.
sanitizer="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
if [ -x "$sanitizer" ]; then
  step memcheck 900 "$sanitizer" --tool memcheck --error-exitcode 99 --print-limit 20 \
    "$python" -m pytest "${TESTS[0]}" -q -x -p no:cacheprovider -k "$MEMCHECK_K"
  step racecheck 900 "$sanitizer" --tool racecheck --error-exitcode 99 --print-limit 20 \
    "$python" -m pytest "${TESTS[0]}" -q -x -p no:cacheprovider -k "$RACECHECK_K"
else
  echo "sanitizer    FAILED (compute-sanitizer not found)" | tee -a "$summary"
  failed=1
fi

# 4. The CUDA benchmarks (float32, float16, bfloat16), the reference in the same run: the
# suite that ships in the wheel, run as users run it (`ddetr bench`), then the lab's HF
# transformers models before and after kernelize, where transformers is installed.
suites=(op module)
"$python" -c "import ddetr.models" 2>/dev/null && suites+=(model)
step bench 900 "$python" -m ddetr bench --suite "${suites[@]}" --output "$out/bench-cuda.json" -k cuda
reports=("$out/bench-cuda.json")
if "$python" -c "import transformers" 2>/dev/null; then
  step bench_hf 900 "$python" -m pytest benchmarks/test_bench_hf_models.py -k cuda -p no:cacheprovider \
    --benchmark-json="$out/bench-hf-cuda.json"
  reports+=("$out/bench-hf-cuda.json")
fi
"$python" benchmarks/report.py "${reports[@]}" >"$out/bench-cuda.md" 2>&1

echo "== summary ($out)"
cat "$summary"
exit $failed
