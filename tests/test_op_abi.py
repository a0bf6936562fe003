"""The op library stays on LibTorch's stable ABI: every symbol it needs from outside is the
stable C shim (aoti_torch_*, torch_*), the C/C++ runtimes or the CUDA runtime. A symbol of
torch's C++ API (c10::, at::, torch::) would tie the build to one torch release again."""

import os
import re
import shutil
import subprocess

import pytest
import torch

import ddetr

LIB = os.path.join(os.path.dirname(ddetr.__file__), ddetr._build_info.ops_library)
# Versioned symbols come from glibc, libstdc++, libgcc or the CUDA runtime.
VERSIONED = re.compile(r"@(GLIBC|GLIBCXX|CXXABI|GCC|libcudart)")
STABLE_C = re.compile(r"^(aoti_torch_|torch_)[a-z0-9_]+$")


def undefined_symbols(path):
    out = subprocess.run(["nm", "-D", "--undefined-only", path], capture_output=True, text=True, check=True).stdout
    # lines are "    U name" or "    w name" (weak, optional)
    return [line.split()[-1] for line in out.splitlines() if line.split()[:1] == ["U"]]


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils' nm")
def test_only_stable_abi_symbols():
    symbols = undefined_symbols(LIB)
    assert any(STABLE_C.match(s) for s in symbols), "the library uses no stable-ABI symbol at all?"
    assert "torch_parallel_for" in symbols, "CPU kernels no longer thread on torch's pool"
    outside = [s for s in symbols if not (VERSIONED.search(s) or STABLE_C.match(s))]
    assert outside == [], f"symbols outside the stable ABI: {outside[:20]}"


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils' nm")
def test_the_check_sees_a_cxx_api_symbol(tmp_path):
    # The filter above must catch a C++ API symbol: a library that calls at::empty fails it.
    if shutil.which("c++") is None:
        pytest.skip("needs a C++ compiler")
    src = tmp_path / "bad.cpp"
    src.write_text("namespace at { void* empty_like_stub(int); }\nvoid* f() { return at::empty_like_stub(1); }\n")
    lib = tmp_path / "libbad.so"
    subprocess.run(["c++", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    symbols = undefined_symbols(str(lib))
    assert [s for s in symbols if not (VERSIONED.search(s) or STABLE_C.match(s))]


def test_ops_registered_for_this_build():
    for name in ("ddetr::ms_deform_attn", "ddetr::ms_deform_attn_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA") == ddetr.build_info()["cuda"]
