#!/usr/bin/env bash
# Sets up .venv from a bare Python: torch (pinned, CPU build by default), the build tools,
# the runtime and test dependencies, then builds and installs ddetr against that torch.
#   TORCH_SPEC   what to install as torch (default torch==2.13.0; e.g. a CUDA build's pin)
#   PYTHON       the interpreter that creates .venv (default python3)
#   DDETR_CUDA   AUTO (default), ON or OFF: build the CUDA kernels
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
. .venv/bin/activate
pip() { python -m pip "$@"; }
# torch first and pinned: an unpinned dependency would pull the newest (multi-GB CUDA) build
pip install -q "${TORCH_SPEC:-torch==2.13.0}"
# the build tools pyproject.toml's [build-system] names (a --no-build-isolation build does not
# fetch them), plus the cmake and ninja an isolated build would add
build_requires=$(python -c 'import re; t = open("pyproject.toml").read(); print(" ".join(re.findall(r"\"([^\"]+)\"", re.search(r"^requires = \[(.*?)\]", t, re.M | re.S).group(1))))')
pip install -q cmake ninja $build_requires
# --no-build-isolation: compile against the torch installed above, not a fresh one. The
# extras are pyproject.toml's: the tests, HF-layout weights, export, the style checker.
pip install -q --no-build-isolation ".[test,hf,export,dev]"
python -c "import ddetr; i = ddetr.build_info(); print('ddetr', i['version'], 'built with torch', i['torch_version'], '(loads in torch >=', i['torch_target'] + ') | CPU kernels:', i['cpu_kernel_isa'], '| CUDA:', ' '.join(i['cuda_archs']) or 'no')"
