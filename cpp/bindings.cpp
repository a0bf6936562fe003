// The ddetr._C module: loading it registers the ddetr ops with torch (static
// registrations in ms_deform_attn.cpp); its functions report how it was built.
#include <ATen/Parallel.h>
#include <pybind11/pybind11.h>

#include "ms_deform_attn/ms_deform_attn.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "ddetr's compiled op library (multi-scale deformable attention)";
  m.def("build_info", [] {
    py::dict info;
    info["version"] = DDETR_VERSION;
    info["torch_version"] = DDETR_TORCH_VERSION;
#ifdef DDETR_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
    info["cuda_archs"] = DDETR_CUDA_ARCHS;
    info["cpu_kernel_isa"] = ddetr::cpu_kernel_isa();
    info["cpu_kernel_threaded"] = ddetr::cpu_kernel_threaded();
    info["parallel"] = at::get_parallel_info();
    return info;
  }, "How this library was built: torch version, CUDA architectures, CPU kernels, threading.");
}
