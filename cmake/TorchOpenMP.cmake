# at::parallel_for is a header template. Under torch's OpenMP backend it runs in parallel
# only in code compiled with OpenMP; compiled without, it silently runs on one thread.
# ddetr_torch_openmp(<target> <source>...) compiles those sources with OpenMP and links the
# OpenMP runtime torch itself ships, so the process holds one runtime and one thread pool.
file(STRINGS "${TORCH_INSTALL_PREFIX}/include/ATen/Config.h" _at_openmp
     REGEX "^#define AT_PARALLEL_OPENMP 1")
set(DDETR_TORCH_OPENMP_RUNTIME "")
if(_at_openmp)
  find_package(OpenMP REQUIRED COMPONENTS CXX)
  # Wheels bundle their runtime next to libtorch or in auditwheel's torch.libs (libgomp,
  # possibly with a hashed name); the system's runtime is the fallback.
  file(GLOB _torch_omp "${TORCH_INSTALL_PREFIX}/lib/libgomp*.so*"
       "${TORCH_INSTALL_PREFIX}/lib/libiomp5*" "${TORCH_INSTALL_PREFIX}/lib/libomp*"
       "${TORCH_INSTALL_PREFIX}/../torch.libs/libgomp*.so*")
  if(_torch_omp)
    list(GET _torch_omp 0 DDETR_TORCH_OPENMP_RUNTIME)
  endif()
endif()

function(ddetr_torch_openmp target)
  if(NOT _at_openmp)
    return()  # torch's native thread pool: invoke_parallel lives in libtorch, no flag needed
  endif()
  separate_arguments(_flags NATIVE_COMMAND "${OpenMP_CXX_FLAGS}")
  set_source_files_properties(${ARGN} PROPERTIES COMPILE_OPTIONS "${_flags}")
  if(DDETR_TORCH_OPENMP_RUNTIME)
    target_link_libraries(${target} PRIVATE "${DDETR_TORCH_OPENMP_RUNTIME}")
    message(STATUS "ddetr: OpenMP runtime from torch: ${DDETR_TORCH_OPENMP_RUNTIME}")
  else()
    target_link_libraries(${target} PRIVATE OpenMP::OpenMP_CXX)
    message(STATUS "ddetr: OpenMP runtime: ${OpenMP_CXX_LIBRARIES}")
  endif()
endfunction()
