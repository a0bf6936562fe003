# LibTorch's stable ABI from the torch that the building interpreter imports: its headers
# (torch/csrc/stable, torch/headeronly) and libtorch_cpu, which exports the stable C shim.
# With TORCH_TARGET_VERSION set to the target (TorchTarget.cmake) the headers expose only what
# that torch already had, so the op library built here loads in every later torch too,
# whichever built it.
# Torch's own CMake package is not used: the op library needs none of its C++ API, and that
# package's CUDA set-up (its own toolkit search and architecture list) breaks with newer
# toolkits.
include(TorchTarget)  # DDETR_TORCH_TARGET, DDETR_TORCH_TARGET_VERSION
execute_process(
  COMMAND ${Python_EXECUTABLE} -c
    "import os, torch; print(os.path.dirname(torch.__file__)); print(torch.__version__); print(torch.version.cuda or ''); print('.'.join(torch.__version__.split('+')[0].split('.')[:2]))"
  OUTPUT_VARIABLE _torch_info
  RESULT_VARIABLE _torch_rc
  ERROR_VARIABLE _torch_err
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR
    "ddetr builds against the installed torch, but '${Python_EXECUTABLE}' cannot import it:\n"
    "${_torch_err}\nInstall torch (>= ${DDETR_TORCH_TARGET}) first, then build with "
    "`pip install --no-build-isolation .` (an isolated build would fetch another torch).")
endif()
string(REPLACE "\n" ";" _torch_info "${_torch_info}")
list(GET _torch_info 0 DDETR_TORCH_DIR)
list(GET _torch_info 1 DDETR_TORCH_VERSION)
list(GET _torch_info 2 DDETR_TORCH_CUDA)
list(GET _torch_info 3 _torch_major_minor)
if(_torch_major_minor VERSION_LESS DDETR_TORCH_TARGET)
  message(FATAL_ERROR "ddetr needs torch >= ${DDETR_TORCH_TARGET} (LibTorch's stable ABI), "
                      "but the building interpreter has torch ${DDETR_TORCH_VERSION}")
endif()
find_library(DDETR_LIBTORCH_CPU torch_cpu PATHS "${DDETR_TORCH_DIR}/lib" NO_DEFAULT_PATH NO_CACHE)
if(NOT DDETR_LIBTORCH_CPU OR NOT EXISTS "${DDETR_TORCH_DIR}/include/torch/csrc/stable/library.h")
  message(FATAL_ERROR "torch ${DDETR_TORCH_VERSION} at ${DDETR_TORCH_DIR} lacks libtorch_cpu or "
                      "the stable-ABI headers (torch/csrc/stable)")
endif()

# Linked by the op library. The libraries are found at run time by their soname among those
# `import torch` already loaded, whatever environment that torch lives in.
add_library(ddetr_torch_stable INTERFACE)
target_include_directories(ddetr_torch_stable SYSTEM INTERFACE "${DDETR_TORCH_DIR}/include")
target_compile_definitions(ddetr_torch_stable INTERFACE
  TORCH_TARGET_VERSION=${DDETR_TORCH_TARGET_VERSION})
target_link_libraries(ddetr_torch_stable INTERFACE "${DDETR_LIBTORCH_CPU}")
message(STATUS "ddetr: torch ${DDETR_TORCH_VERSION} (CUDA: '${DDETR_TORCH_CUDA}') from "
               "${DDETR_TORCH_DIR}; stable ABI target ${DDETR_TORCH_TARGET}")
