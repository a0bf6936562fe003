// What the op library reports about itself to ddetr._C's build_info. Plain C, no torch
// header: the pybind11 module includes this and nothing of torch.
#pragma once

extern "C" {
// The instruction set the CPU kernels run with on this machine ("avx512", "avx2", "baseline").
__attribute__((visibility("default"))) const char* ddetr_cpu_kernel_isa();
}
