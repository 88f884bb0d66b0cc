# macattn_engine: model loading (config, safetensors), the CPU forward pass and the Session.
# Included by src/engine/CMakeLists.txt after the tokenizer. Headers are included as
# "engine/..." from ${PROJECT_SOURCE_DIR}/src.
find_package(nlohmann_json 3 REQUIRED)

add_library(macattn_engine STATIC
  ${CMAKE_CURRENT_LIST_DIR}/io/mapped_file.cpp
  ${CMAKE_CURRENT_LIST_DIR}/io/safetensors.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model_config.cpp
  ${CMAKE_CURRENT_LIST_DIR}/model.cpp
  ${CMAKE_CURRENT_LIST_DIR}/paged_kv_cache.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cpu/gemm.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cpu/gemm_portable.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cpu/gemm_avx512.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cpu/gemm_avx2.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cpu/linear.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cpu/ops.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cpu/prefill_attention.cpp
  ${CMAKE_CURRENT_LIST_DIR}/forward.cpp
  ${CMAKE_CURRENT_LIST_DIR}/session.cpp)
# The AVX-512 kernels get their ISA flags alone; gemm.cpp calls them only after checking
# the processor (__builtin_cpu_supports).
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/cpu/gemm_avx512.cpp PROPERTIES COMPILE_OPTIONS
  "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mfma;-mf16c;-ffp-contract=fast;-Wno-uninitialized;-Wno-maybe-uninitialized")
# (GCC 12 warns on its own _mm512_undefined_* inside the intrinsic headers; nothing of ours.)
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/cpu/gemm_avx2.cpp PROPERTIES COMPILE_OPTIONS
  "-mavx2;-mfma;-mf16c;-ffp-contract=fast")
target_include_directories(macattn_engine PUBLIC ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(macattn_engine PUBLIC macattn::macattn_static OpenMP::OpenMP_CXX nlohmann_json::nlohmann_json)
if(TARGET macattn_tokenizer)
  target_link_libraries(macattn_engine PUBLIC macattn_tokenizer)
endif()

# Fuzz entry points for the parsers of untrusted files (safetensors header, config.json).
# With MACATTN_BUILD_FUZZERS (clang): libFuzzer binaries. Without: the same sources linked
# with a replay main (fuzz/replay_main.cpp) that runs the committed seed corpus as a test.
# Each target compiles its parser's sources itself, so under libFuzzer they carry the
# coverage instrumentation (the library build does not).
set(MACATTN_ENGINE_FUZZ_fuzz_safetensors_SOURCES ${CMAKE_CURRENT_LIST_DIR}/io/safetensors.cpp)
set(MACATTN_ENGINE_FUZZ_fuzz_config_SOURCES ${CMAKE_CURRENT_LIST_DIR}/model_config.cpp ${CMAKE_CURRENT_LIST_DIR}/io/mapped_file.cpp)
foreach(f fuzz_safetensors fuzz_config)
  if(MACATTN_BUILD_FUZZERS)
    add_executable(engine_${f} ${CMAKE_CURRENT_LIST_DIR}/fuzz/${f}.cpp ${MACATTN_ENGINE_FUZZ_${f}_SOURCES})
    target_compile_options(engine_${f} PRIVATE -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer)
    target_link_options(engine_${f} PRIVATE -fsanitize=fuzzer,address,undefined)
  else()
    add_executable(engine_${f} ${CMAKE_CURRENT_LIST_DIR}/fuzz/${f}.cpp ${CMAKE_CURRENT_LIST_DIR}/fuzz/replay_main.cpp
                   ${MACATTN_ENGINE_FUZZ_${f}_SOURCES})
  endif()
  # Header-only use of the library (DType, Error): no link, so the fuzzers build on their own.
  target_include_directories(engine_${f} PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/include)
  target_link_libraries(engine_${f} PRIVATE nlohmann_json::nlohmann_json)
endforeach()

# The CUDA forward pass (src/engine/cuda): CudaSession over cuBLAS and the library's
# macattn::cuda attention; without CUDA a stand-in whose constructors throw.
if(MACATTN_WITH_CUDA)
  find_package(CUDAToolkit REQUIRED)
  target_sources(macattn_engine PRIVATE
    ${CMAKE_CURRENT_LIST_DIR}/cuda/kernels.cu
    ${CMAKE_CURRENT_LIST_DIR}/cuda/causal_attention.cu
    ${CMAKE_CURRENT_LIST_DIR}/cuda/cuda_session.cu
    ${CMAKE_CURRENT_LIST_DIR}/cuda/bench_support.cu)
  target_link_libraries(macattn_engine PUBLIC CUDA::cudart CUDA::cublas)
  target_compile_options(macattn_engine PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo --expt-relaxed-constexpr>)
  target_compile_definitions(macattn_engine PUBLIC MACATTN_ENGINE_WITH_CUDA=1)
else()
  target_sources(macattn_engine PRIVATE ${CMAKE_CURRENT_LIST_DIR}/cuda/cuda_session_unavailable.cpp
                                        ${CMAKE_CURRENT_LIST_DIR}/cuda/bench_support_unavailable.cpp)
endif()
