#!/usr/bin/env bash
# Compile-checks the CUDA side without a GPU and without a CUDA build of torch:
#   1. every .cu under cpp/ with nvcc, to object files for sm_80 and sm_90, warnings as errors;
#   2. the torch glue (cpp/ms_deform_attn/cuda/ms_deform_attn_cuda.cpp) with the host
#      compiler, -fsyntax-only, against the installed torch's stable-ABI headers and nvcc's.
# Needs nvcc (NVCC or PATH or /usr/local/cuda/bin) and `python` importing torch (the CI
# venv). Exits non-zero on the first failure; prints each command it runs.
# With DDETR_CUDA_EMULATE=1 it then also runs the kernels' logic tests on the CPU
# (tools/cuda_emulation/run.sh, about 3 more minutes).
#
#   bash tools/check_cuda_sources.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

nvcc="${NVCC:-}"
if [[ -z "$nvcc" ]]; then
  if command -v nvcc >/dev/null 2>&1; then
    nvcc="$(command -v nvcc)"
  elif [[ -x /usr/local/cuda/bin/nvcc ]]; then
    nvcc=/usr/local/cuda/bin/nvcc
  else
    echo "check_cuda_sources: nvcc not found (set NVCC=/path/to/nvcc)" >&2
    exit 1
  fi
fi
cxx="${CXX:-g++}"
python="${PYTHON:-python}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

run() {
  echo "+ $*"
  "$@"
}

echo "== nvcc: $("$nvcc" --version | tail -n 1)"
# nvcc's own include directory (cuda_runtime_api.h), for the host-compiler check below.
cuda_inc="$(cd "$(dirname "$(readlink -f "$nvcc")")/../include" && pwd)"
if [[ ! -f "$cuda_inc/cuda_runtime_api.h" && -f /usr/local/cuda/include/cuda_runtime_api.h ]]; then
  cuda_inc=/usr/local/cuda/include
fi

# ------------------------------------------------------------------------- 1. kernels
mapfile -t cu_files < <(find cpp -name '*.cu' | sort)
if [[ ${#cu_files[@]} -eq 0 ]]; then
  echo "check_cuda_sources: no .cu file under cpp/" >&2
  exit 1
fi
nvcc_flags=(-std=c++17 -O3 -Werror all-warnings -Xcompiler=-Wall,-Wextra,-Werror
            -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90)
for f in "${cu_files[@]}"; do
  obj="$tmp/$(echo "$f" | tr '/' '_').o"
  run "$nvcc" "${nvcc_flags[@]}" -c "$f" -o "$obj"
done
echo "== ${#cu_files[@]} CUDA source(s) compiled for sm_80 and sm_90"

# ---------------------------------------------------------------------------- 2. glue
# The glue sees only torch's stable-ABI headers, with the target version the build uses.
torch_inc="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))')"
torch_version="$("$python" -c 'import torch; print(torch.__version__)')"
target="$(cmake -P cmake/TorchTarget.cmake 2>&1)"
glue_flags=(-std=c++20 -fsyntax-only -Wall -Wextra -Wno-unused-parameter -Werror
            -DUSE_CUDA -DTORCH_TARGET_VERSION="$target" -isystem "$torch_inc" -I "$cuda_inc")
mapfile -t glue_files < <(find cpp -path '*cuda*' -name '*.cpp' | sort)
for f in "${glue_files[@]}"; do
  run "$cxx" "${glue_flags[@]}" "$f"
done
echo "== ${#glue_files[@]} glue file(s) syntax-checked against torch $torch_version's stable ABI (target $target)"

if [[ "${DDETR_CUDA_EMULATE:-0}" == 1 ]]; then
  run bash tools/cuda_emulation/run.sh
  echo "== kernels emulated on the CPU match the CPU kernels"
fi
echo "check_cuda_sources: OK"
