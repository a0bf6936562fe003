# The CUDA kernels: plain CUDA C++ (no torch header) in a static library that the stable-ABI
# glue (cuda/ms_deform_attn_cuda.cpp) launches. Built when torch is a CUDA build and a CUDA
# compiler is found (DDETR_CUDA=AUTO), always (ON, an error otherwise) or never (OFF).
#
# The compiler: CMAKE_CUDA_COMPILER or CUDACXX, else nvcc on PATH, under CUDA_HOME or
# CUDA_PATH, or /usr/local/cuda. Its major version must be torch's (the kernels use the CUDA
# runtime torch loaded). Architectures: CMAKE_CUDA_ARCHITECTURES, CUDAARCHS or
# TORCH_CUDA_ARCH_LIST ("8.0;9.0+PTX") if set, else Ampere to Blackwell natively
# (80 86 89 90 100 120, those this nvcc supports) plus PTX of the newest of them.
set(DDETR_WITH_CUDA OFF)
set(DDETR_CUDA_ARCHS_USED "")
set(DDETR_CUDA_VERSION "")

function(ddetr_cuda_unavailable why)
  if(DDETR_CUDA STREQUAL "ON")
    message(FATAL_ERROR "ddetr: DDETR_CUDA=ON but ${why}")
  endif()
  message(WARNING "ddetr: ${why}: building the CPU kernels only (DDETR_CUDA=ON makes this an "
                  "error, DDETR_CUDA=OFF silences it)")
endfunction()

# "8.0;8.6;9.0+PTX" (torch's convention) -> "80-real;86-real;90-real;90-virtual"
function(ddetr_torch_arch_list_to_cmake list out)
  set(_archs "")
  string(REPLACE " " ";" list "${list}")
  foreach(a IN LISTS list)
    string(REGEX MATCH "^([0-9]+)\\.([0-9]+)([a-z]?)(\\+PTX)?$" _m "${a}")
    if(NOT _m)
      message(FATAL_ERROR "ddetr: TORCH_CUDA_ARCH_LIST entry '${a}' is not like 8.0, 9.0a or "
                          "9.0+PTX; set CUDAARCHS to CMake's form instead (e.g. 80-real;90)")
    endif()
    set(_sm "${CMAKE_MATCH_1}${CMAKE_MATCH_2}${CMAKE_MATCH_3}")
    list(APPEND _archs "${_sm}-real")
    if(CMAKE_MATCH_4)
      list(APPEND _archs "${_sm}-virtual")
    endif()
  endforeach()
  set(${out} "${_archs}" PARENT_SCOPE)
endfunction()

if(NOT DDETR_CUDA STREQUAL "OFF")
  if(NOT DDETR_TORCH_CUDA)
    if(DDETR_CUDA STREQUAL "ON")
      message(FATAL_ERROR "ddetr: DDETR_CUDA=ON but torch ${DDETR_TORCH_VERSION} is a CPU build")
    endif()
  else()
    if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
      find_program(DDETR_NVCC nvcc HINTS ENV CUDA_HOME ENV CUDA_PATH /usr/local/cuda
                   PATH_SUFFIXES bin)
      if(DDETR_NVCC)
        set(CMAKE_CUDA_COMPILER "${DDETR_NVCC}")
      endif()
    endif()
    include(CheckLanguage)
    check_language(CUDA)
    if(NOT CMAKE_CUDA_COMPILER)
      ddetr_cuda_unavailable("torch ${DDETR_TORCH_VERSION} is a CUDA ${DDETR_TORCH_CUDA} build and "
                             "no CUDA compiler was found (put nvcc on PATH, or set CUDACXX or "
                             "CUDA_HOME)")
    else()
      set(DDETR_WITH_CUDA ON)
    endif()
  endif()
endif()

if(DDETR_WITH_CUDA)
  execute_process(COMMAND "${CMAKE_CUDA_COMPILER}" --version OUTPUT_VARIABLE _nvcc_version)
  string(REGEX MATCH "release ([0-9]+)\\.([0-9]+)" _m "${_nvcc_version}")
  set(DDETR_CUDA_VERSION "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}")
  set(_nvcc_major "${CMAKE_MATCH_1}")
  string(REGEX MATCH "^[0-9]+" _torch_cuda_major "${DDETR_TORCH_CUDA}")
  if(NOT _nvcc_major STREQUAL _torch_cuda_major)
    message(FATAL_ERROR
      "ddetr: nvcc ${DDETR_CUDA_VERSION} (${CMAKE_CUDA_COMPILER}) cannot build for torch "
      "${DDETR_TORCH_VERSION}, a CUDA ${DDETR_TORCH_CUDA} build: the kernels must use torch's "
      "CUDA ${_torch_cuda_major}.x runtime. Point CUDACXX at a CUDA ${_torch_cuda_major}.x nvcc, "
      "or set DDETR_CUDA=OFF for a CPU-only build.")
  endif()

  execute_process(COMMAND "${CMAKE_CUDA_COMPILER}" --list-gpu-arch OUTPUT_VARIABLE _listed)
  string(REGEX MATCHALL "compute_([0-9]+[a-z]?)" _listed "${_listed}")
  string(REPLACE "compute_" "" DDETR_NVCC_ARCHS "${_listed}")

  if(CMAKE_CUDA_ARCHITECTURES)
    set(_archs "${CMAKE_CUDA_ARCHITECTURES}")
  elseif(DEFINED ENV{CUDAARCHS} AND NOT "$ENV{CUDAARCHS}" STREQUAL "")
    set(_archs "$ENV{CUDAARCHS}")
  elseif(DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT "$ENV{TORCH_CUDA_ARCH_LIST}" STREQUAL "")
    ddetr_torch_arch_list_to_cmake("$ENV{TORCH_CUDA_ARCH_LIST}" _archs)
  else()
    set(_archs "")
    set(_newest "")
    foreach(a 80 86 89 90 100 120)
      if(a IN_LIST DDETR_NVCC_ARCHS)
        list(APPEND _archs "${a}-real")
        set(_newest ${a})
      endif()
    endforeach()
    if(NOT _newest)
      message(FATAL_ERROR "ddetr: nvcc ${DDETR_CUDA_VERSION} supports none of the default "
                          "architectures 80-120 (it lists: ${DDETR_NVCC_ARCHS}); set CUDAARCHS")
    endif()
    list(APPEND _archs "${_newest}-virtual")
  endif()
  # Every named architecture must be one this nvcc builds ("all", "native" and the like are
  # CMake's to resolve).
  foreach(a IN LISTS _archs)
    string(REGEX REPLACE "-(real|virtual)$" "" _sm "${a}")
    if(_sm MATCHES "^[0-9]+[a-z]?$" AND NOT _sm IN_LIST DDETR_NVCC_ARCHS)
      message(FATAL_ERROR
        "ddetr: CUDA architecture '${a}' is not supported by nvcc ${DDETR_CUDA_VERSION} "
        "(${CMAKE_CUDA_COMPILER}), which supports: ${DDETR_NVCC_ARCHS}. Set CUDAARCHS (e.g. "
        "\"80-real;90-real;90-virtual\") or TORCH_CUDA_ARCH_LIST to ones it supports.")
    endif()
  endforeach()
  set(CMAKE_CUDA_ARCHITECTURES "${_archs}")

  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  find_package(CUDAToolkit REQUIRED)
  set(_cuda_dir ${CMAKE_CURRENT_SOURCE_DIR}/cpp/ms_deform_attn/cuda)
  add_library(ddetr_cuda_kernels STATIC
    ${_cuda_dir}/forward.cu
    ${_cuda_dir}/backward.cu)
  # Headers (launch.h is also included by the glue, ms_deform_attn_cuda.cpp).
  target_sources(ddetr_cuda_kernels PRIVATE ${_cuda_dir}/launch.h ${_cuda_dir}/common.cuh)
  # No --use_fast_math: the kernels only multiply and add, and IEEE denormals keep them
  # closest to the CPU kernels.
  target_compile_options(ddetr_cuda_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 -lineinfo>)
  # The shared CUDA runtime, the one torch itself loaded (same soname): a static copy would
  # be a second runtime instance beside torch's. PUBLIC: the glue needs it too.
  set_target_properties(ddetr_cuda_kernels PROPERTIES
    POSITION_INDEPENDENT_CODE ON
    CUDA_RUNTIME_LIBRARY Shared)
  target_link_libraries(ddetr_cuda_kernels PUBLIC CUDA::cudart)

  # libtorch_cuda exports the stable shim's aoti_torch_get_current_cuda_stream.
  find_library(DDETR_LIBTORCH_CUDA torch_cuda PATHS "${DDETR_TORCH_DIR}/lib" NO_DEFAULT_PATH NO_CACHE
               REQUIRED)
  add_library(ddetr_torch_stable_cuda INTERFACE)
  target_link_libraries(ddetr_torch_stable_cuda INTERFACE ddetr_torch_stable
                        "${DDETR_LIBTORCH_CUDA}")
  target_compile_definitions(ddetr_torch_stable_cuda INTERFACE USE_CUDA)

  set(DDETR_CUDA_ARCHS_USED "${CMAKE_CUDA_ARCHITECTURES}")
  message(STATUS "ddetr: CUDA kernels with nvcc ${DDETR_CUDA_VERSION} for ${CMAKE_CUDA_ARCHITECTURES}")
else()
  message(STATUS "ddetr: CPU-only build")
endif()
