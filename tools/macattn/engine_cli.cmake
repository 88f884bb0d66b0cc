# tools/macattn/engine_cli.cmake: the commands of the macattn tool that run a model
# (`generate`, `bench-e2e`), included by CMakeLists.txt when MACATTN_BUILD_ENGINE is on.
# They need the engine's libraries; without them the tool is built without these commands.
include(${CMAKE_CURRENT_LIST_DIR}/sampling_library.cmake)
if(TARGET macattn_engine AND TARGET macattn_tokenizer)
  target_sources(macattn PRIVATE
    engine_commands.cpp
    engine_options.cpp
    utf8_stream.cpp
    generate_options.cpp
    generate.cpp
    generate_report.cpp
    bench_e2e_options.cpp
    bench_e2e.cpp
    bench_e2e_report.cpp
    bench_e2e_cuda.cpp)
  # `bench-e2e --device cuda` measures the streaming-read bandwidth for its byte floor.
  if(MACATTN_WITH_CUDA)
    target_sources(macattn PRIVATE stream_bandwidth_cuda.cu)
  endif()
  target_link_libraries(macattn PRIVATE macattn_engine macattn_tokenizer macattn_sampling)
  # MACATTN_SOURCE_DIR: the last place the tool looks for the shipped model and prompt.
  target_compile_definitions(macattn PRIVATE MACATTN_WITH_ENGINE=1 MACATTN_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
else()
  message(STATUS "macattn: the engine libraries are not defined; building without generate and bench-e2e")
endif()
