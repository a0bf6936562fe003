# The CPU kernels (cpp/ms_deform_attn/cpu/kernels_isa.cpp) are compiled once per
# instruction set; the glue picks the best copy the running CPU supports, so one wheel is
# both portable and fast. -fopenmp-simd honours `#pragma omp simd` without linking an
# OpenMP runtime (threads come from torch's pool via the stable ABI's parallel_for).
set(_isa_src ${CMAKE_CURRENT_SOURCE_DIR}/cpp/ms_deform_attn/cpu/kernels_isa.cpp)
set(_common -O3 -fopenmp-simd -fno-math-errno -fno-trapping-math)
set(DDETR_CPU_ISAS baseline)
set(DDETR_CPU_ISA_DEFINES "")
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  list(APPEND DDETR_CPU_ISAS avx2 avx512)
  list(APPEND DDETR_CPU_ISA_DEFINES DDETR_HAVE_AVX2 DDETR_HAVE_AVX512)
endif()
set(_flags_baseline "")
set(_flags_avx2 -mavx2 -mfma -mf16c)
set(_flags_avx512 -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c -mprefer-vector-width=512)
add_library(ddetr_cpu_kernels INTERFACE)
foreach(isa IN LISTS DDETR_CPU_ISAS)
  add_library(ddetr_cpu_${isa} OBJECT ${_isa_src})
  target_compile_definitions(ddetr_cpu_${isa} PRIVATE DDETR_ISA=${isa})
  target_compile_options(ddetr_cpu_${isa} PRIVATE ${_common} ${_flags_${isa}})
  set_target_properties(ddetr_cpu_${isa} PROPERTIES CXX_VISIBILITY_PRESET hidden)
  target_sources(ddetr_cpu_kernels INTERFACE $<TARGET_OBJECTS:ddetr_cpu_${isa}>)
endforeach()
