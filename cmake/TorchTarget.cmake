# The oldest torch the op library loads in: the one place it is written. TorchStable.cmake
# includes this; `cmake -P cmake/TorchTarget.cmake` prints the TORCH_TARGET_VERSION value for
# the scripts that compile the glue outside CMake (tools/check_cuda_sources.sh).
set(DDETR_TORCH_TARGET "2.10")
string(REPLACE "." ";" _ddetr_target_parts "${DDETR_TORCH_TARGET}")
list(GET _ddetr_target_parts 0 _ddetr_target_major)
list(GET _ddetr_target_parts 1 _ddetr_target_minor)
# torch/csrc/stable/version.h's encoding: (major << 56) | (minor << 48)
math(EXPR DDETR_TORCH_TARGET_VERSION "(${_ddetr_target_major} << 56) | (${_ddetr_target_minor} << 48)"
     OUTPUT_FORMAT HEXADECIMAL)
if(CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  message("${DDETR_TORCH_TARGET_VERSION}")
endif()
