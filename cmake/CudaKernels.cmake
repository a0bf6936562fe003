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
  add_library(ddetr_cuda_kernels STATIC
    ${CMAKE_CURRENT_SOURCE_DIR}/cpp/ms_deform_attn/cuda/forward.cu
    ${CMAKE_CURRENT_SOURCE_DIR}/cpp/ms_deform_attn/cuda/backward.cu)
  target_compile_options(ddetr_cuda_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 --use_fast_math -lineinfo>)
  set_target_properties(ddetr_cuda_kernels PROPERTIES POSITION_INDEPENDENT_CODE ON)
  set(DDETR_CUDA_ARCHS_USED "${CMAKE_CUDA_ARCHITECTURES}")
  message(STATUS "ddetr: CUDA kernels for ${CMAKE_CUDA_ARCHITECTURES}")
else()
  message(STATUS "ddetr: CPU-only build")
endif()
