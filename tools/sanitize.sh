#!/usr/bin/env bash
# Builds the op library with AddressSanitizer + UndefinedBehaviorSanitizer into
# build/sanitize and runs the op tests against it (CPU kernels). Run inside the venv that
# setup.sh made:   . .venv/bin/activate && bash tools/sanitize.sh [pytest args]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build/sanitize"
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDDETR_CUDA=OFF \
  -DPython_EXECUTABLE="$(command -v python)" \
  -Dpybind11_DIR="$(python -c 'import pybind11; print(pybind11.get_cmake_dir())')" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build "$build" >/dev/null
# a package tree: the Python sources plus the sanitized library
pkg="$build/pkg"
rm -rf "$pkg" && mkdir -p "$pkg"
cp -r "$root/python/ddetr" "$pkg/ddetr"
cp "$build"/_C*.so "$build"/libddetr_ops.so "$build/_build_info.py" "$pkg/ddetr/"
# torch is not built with ASan, so the runtime is preloaded; leaks in CPython/torch are not ours
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd "$root"
PYTHONPATH="$pkg" python -c "import ddetr, sys; assert ddetr.__file__.startswith('$pkg'), ddetr.__file__"
PYTHONPATH="$pkg" python -m pytest tests/test_op_values.py tests/test_op_edge.py tests/test_op_errors.py \
  -q -p no:cacheprovider -k "not import_ and not subprocess" "$@"
