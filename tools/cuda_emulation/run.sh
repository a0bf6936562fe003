#!/usr/bin/env bash
# Tests the CUDA kernels' logic without a GPU: rewrites the <<<...>>> launches of
# forward.cu / backward.cu into emu::launch calls, compiles them as host C++ with emu.h
# force-included (g++, AddressSanitizer + UBSan), links the CPU kernels as the reference and
# runs harness.cc. Needs g++ and the CUDA headers (nvcc's include dir). About 3 minutes.
#
#   bash tools/cuda_emulation/run.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$(cd "$here/../../cpp/ms_deform_attn" && pwd)"
cuda_dir="$src/cuda"
cpu_dir="$src/cpu"
nvcc="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
cuda_inc="$(cd "$(dirname "$(readlink -f "$nvcc")")/../include" && pwd)"
[[ -f "$cuda_inc/cuda_runtime.h" ]] || cuda_inc=/usr/local/cuda/include
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for f in forward backward; do
  python3 - "$cuda_dir/$f.cu" "$tmp/${f}_emu.cc" <<'PY'
import re, sys
src, dst = sys.argv[1], sys.argv[2]
s = open(src).read()
s = s.replace('#include "common.cuh"', '#include "%s/common.cuh"' % src.rsplit("/", 1)[0])
launch = re.compile(r'((?:detail::)?\w+_kernel<[^;]*?>)\s*<<<([^>]*)>>>\s*\(([^;]*?)\);', re.S)
s, n = launch.subn(lambda m: f'::emu::launch({m.group(2)}, [&] {{ {m.group(1)}({m.group(3)}); }});', s)
if n == 0:
    sys.exit(f"no kernel launch found in {src}")
open(dst, "w").write(s)
PY
done
flags=(-std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -pthread
       -I "$cuda_inc" -I "$cuda_dir" -I "$src" -include "$here/emu.h")
echo "+ g++ ${flags[*]} ... (kernels, CPU reference, harness)"
g++ "${flags[@]}" -c "$tmp/forward_emu.cc" -o "$tmp/forward.o" &
g++ "${flags[@]}" -c "$tmp/backward_emu.cc" -o "$tmp/backward.o" &
g++ "${flags[@]}" -DDDETR_ISA=baseline -c "$cpu_dir/kernels_isa.cpp" -o "$tmp/cpu.o" &
g++ "${flags[@]}" -c "$cpu_dir/query_plan.cpp" -o "$tmp/query_plan.o" &
g++ "${flags[@]}" -c "$here/harness.cc" -o "$tmp/harness.o" &
for job in $(jobs -p); do wait "$job"; done
g++ "${flags[@]}" "$tmp"/*.o -o "$tmp/harness"
"$tmp/harness"
