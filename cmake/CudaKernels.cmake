# The CUDA kernels are plain CUDA C++ (no torch header), built into a static library that
# the torch glue (cuda/ms_deform_attn_cuda.cpp) launches.
set(DDETR_WITH_CUDA OFF)
set(DDETR_CUDA_ARCHS_USED "")
if(NOT DDETR_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(DDETR_TORCH_CUDA AND CMAKE_CUDA_COMPILER)
    set(DDETR_WITH_CUDA ON)
  elseif(DDETR_CUDA STREQUAL "ON")
    message(FATAL_ERROR "DDETR_CUDA=ON but torch is a CPU build ('${DDETR_TORCH_CUDA}') "
                        "or nvcc was not found ('${CMAKE_CUDA_COMPILER}')")
  endif()
endif()
if(DDETR_WITH_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    # Ampere and Hopper natively, plus PTX of the newest for what comes after.
    set(CMAKE_CUDA_ARCHITECTURES 80-real 86-real 90-real 90-virtual)
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  find_package(CUDAToolkit REQUIRED)
  set(_cuda_dir ${CMAKE_CURRENT_SOURCE_DIR}/cpp/ms_deform_attn/cuda)
  add_library(ddetr_cuda_kernels STATIC
    ${_cuda_dir}/forward.cu
    ${_cuda_dir}/backward.cu)
  # Headers (launch.h is also included by the torch glue, ms_deform_attn_cuda.cpp).
  target_sources(ddetr_cuda_kernels PRIVATE ${_cuda_dir}/launch.h ${_cuda_dir}/common.cuh)
  # No --use_fast_math: the kernels only multiply and add, and IEEE denormals keep them
  # closest to the CPU kernels.
  target_compile_options(ddetr_cuda_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 -lineinfo>)
  # The shared CUDA runtime, the one torch itself uses: a static copy inside _C would be a
  # second runtime instance beside torch's. PUBLIC: the glue needs cuda_runtime_api.h and
  # libcudart too.
  set_target_properties(ddetr_cuda_kernels PROPERTIES
    POSITION_INDEPENDENT_CODE ON
    CUDA_RUNTIME_LIBRARY Shared)
  target_link_libraries(ddetr_cuda_kernels PUBLIC CUDA::cudart)
  set(DDETR_CUDA_ARCHS_USED "${CMAKE_CUDA_ARCHITECTURES}")
  message(STATUS "ddetr: CUDA kernels for ${CMAKE_CUDA_ARCHITECTURES}")
else()
  message(STATUS "ddetr: CPU-only build")
endif()
