# Engine tests (model loading, kernels, forward pass vs transformers, sessions, MAC) and the
# fuzz entry points' seed-corpus replays. Included by tests/engine/CMakeLists.txt.
add_executable(engine_tests
  ${CMAKE_CURRENT_LIST_DIR}/test_hf_parity.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_kernels.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_loader_errors.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_model_config.cpp
  ${CMAKE_CURRENT_LIST_DIR}/test_session.cpp)
target_include_directories(engine_tests PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_compile_definitions(engine_tests PRIVATE MACATTN_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
target_link_libraries(engine_tests PRIVATE macattn_engine GTest::gtest_main)
gtest_discover_tests(engine_tests TEST_PREFIX "engine." DISCOVERY_TIMEOUT 60)

if(NOT MACATTN_BUILD_FUZZERS)
  add_test(NAME engine.fuzz_replay.safetensors
           COMMAND engine_fuzz_safetensors ${CMAKE_CURRENT_LIST_DIR}/fuzz_corpus/safetensors)
  add_test(NAME engine.fuzz_replay.config COMMAND engine_fuzz_config ${CMAKE_CURRENT_LIST_DIR}/fuzz_corpus/config)
endif()

# A timing driver (not run by ctest): engine_speed <model_dir> [context] [steps] [text] [threads].
add_executable(engine_speed ${CMAKE_CURRENT_LIST_DIR}/engine_speed.cpp)
target_link_libraries(engine_speed PRIVATE macattn_engine)
if(TARGET macattn_tokenizer)
  target_compile_definitions(engine_speed PRIVATE MACATTN_ENGINE_SPEED_TOKENIZER)
endif()

# The forward pass again on the portable kernel set (the default here is AVX-512), so the
# fallback for other processors is checked against transformers too.
add_test(NAME engine.portable_kernels COMMAND engine_tests "--gtest_filter=Fixtures/HfParity.*:EngineSession.*:ReferenceModel.*")
set_tests_properties(engine.portable_kernels PROPERTIES ENVIRONMENT "MACATTN_ENGINE_ISA=portable")
# And on the AVX2 set (processors without AVX-512). Forcing a set the processor lacks is an
# error, so on a host without AVX2 / FMA / F16C the test reports itself skipped instead.
include(CheckCXXSourceRuns)
check_cxx_source_runs("int main() { return __builtin_cpu_supports(\"avx2\") && __builtin_cpu_supports(\"fma\") && __builtin_cpu_supports(\"f16c\") ? 0 : 1; }"
                      MACATTN_HOST_HAS_AVX2)
if(MACATTN_HOST_HAS_AVX2)
  add_test(NAME engine.avx2_kernels COMMAND engine_tests "--gtest_filter=Fixtures/HfParity.*:EngineSession.*:ReferenceModel.*")
  set_tests_properties(engine.avx2_kernels PROPERTIES ENVIRONMENT "MACATTN_ENGINE_ISA=avx2")
else()
  add_test(NAME engine.avx2_kernels COMMAND ${CMAKE_COMMAND} -E echo "SKIPPED: this host lacks AVX2, FMA or F16C")
  set_tests_properties(engine.avx2_kernels PROPERTIES SKIP_REGULAR_EXPRESSION "SKIPPED")
endif()

# The CUDA forward pass against the CPU engine (tests/engine/cuda). Built in every
# configuration: without CUDA, or without a GPU, each test is SKIPPED with the reason.
if(TARGET macattn_tokenizer)
  add_executable(engine_cuda_tests ${CMAKE_CURRENT_LIST_DIR}/cuda/test_cuda_forward.cpp)
  target_include_directories(engine_cuda_tests PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_definitions(engine_cuda_tests PRIVATE MACATTN_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  target_link_libraries(engine_cuda_tests PRIVATE macattn_engine macattn_tokenizer GTest::gtest_main)
  gtest_discover_tests(engine_cuda_tests TEST_PREFIX "engine.cuda." DISCOVERY_TIMEOUT 60)
endif()
