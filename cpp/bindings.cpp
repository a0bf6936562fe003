// The ddetr._C module: how this copy of ddetr was built. It includes no torch header (the
// ops live in the stable-ABI library libddetr_ops, which `import ddetr` loads first); the
// one thing it asks that library is which CPU kernel copy this machine runs.
#include <pybind11/pybind11.h>

#include "ms_deform_attn/build_info.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "ddetr's build information (the ops are in libddetr_ops, loaded by `import ddetr`)";
  m.def("build_info", [] {
    py::dict info;
    info["version"] = DDETR_VERSION;
    info["torch_version"] = DDETR_TORCH_VERSION;
    info["torch_target"] = DDETR_TORCH_TARGET;
#ifdef DDETR_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
    info["cuda_version"] = DDETR_CUDA_VERSION;
    info["cuda_archs"] = DDETR_CUDA_ARCHS;
    info["cpu_kernel_isa"] = ddetr_cpu_kernel_isa();
    return info;
  }, "How this library was built: torch, CUDA architectures, CPU kernels.");
}
