# Finds Torch's CMake package inside the torch that the building interpreter imports, so
# that the extension links against exactly the torch that will run it.
execute_process(
  COMMAND ${Python_EXECUTABLE} -c
    "import torch; print(torch.utils.cmake_prefix_path); print(torch.__version__); print(torch.version.cuda or '')"
  OUTPUT_VARIABLE _torch_info
  RESULT_VARIABLE _torch_rc
  ERROR_VARIABLE _torch_err
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR
    "ddetr builds against the installed torch, but '${Python_EXECUTABLE}' cannot import it:\n"
    "${_torch_err}\nInstall torch first, then build with `pip install --no-build-isolation .` "
    "(an isolated build would fetch a different torch than the one that runs ddetr).")
endif()
string(REPLACE "\n" ";" _torch_info "${_torch_info}")
list(GET _torch_info 0 _torch_prefix)
list(GET _torch_info 1 DDETR_TORCH_VERSION)
list(LENGTH _torch_info _n)
set(DDETR_TORCH_CUDA "")
if(_n GREATER 2)
  list(GET _torch_info 2 DDETR_TORCH_CUDA)
endif()
list(PREPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
find_package(Torch REQUIRED CONFIG)
message(STATUS "ddetr: torch ${DDETR_TORCH_VERSION} (CUDA: '${DDETR_TORCH_CUDA}') from ${_torch_prefix}")
