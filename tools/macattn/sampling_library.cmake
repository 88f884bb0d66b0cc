# macattn_sampling: next-token sampling (src/engine/sampling.*), a library of its own so the
# macattn tool and the engine tests can link it without touching the engine's own targets.
# Included from tools/macattn/engine_cli.cmake and tests/engine/cli; defined once.
if(NOT TARGET macattn_sampling)
  add_library(macattn_sampling STATIC ${PROJECT_SOURCE_DIR}/src/engine/sampling.cpp)
  # Engine headers are included as "engine/...".
  target_include_directories(macattn_sampling PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(macattn_sampling PUBLIC macattn::macattn_static)
endif()
