# cmake -DTOOL=<macattn> -DMODEL=<dir> -DWORK=<dir> -P check_sampling_seed.cmake
#
# Sampling through `macattn generate`: the same --seed gives the same tokens (run twice, and
# exact vs MAC of one --attention both run, whose two samplers start from the same seed);
# another seed gives other tokens. The distribution itself is checked in test_sampling.cpp.
function(sample seed out)
  set(json "${WORK}/sampling_seed_${seed}_${ARGN}.json")
  execute_process(COMMAND ${TOOL} generate -m ${MODEL} -t 1 -p "The grass is green." -n 30 --ignore-eos --temp 1.0
                          --top-k 50 --top-p 0.98 --seed ${seed} --attention both --progress off --json ${json}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE stdout ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "macattn generate failed (${rc})\n${stdout}\n${err}")
  endif()
  file(READ "${json}" result)
  string(JSON exact GET "${result}" runs 0 tokens)
  string(JSON mac GET "${result}" runs 1 tokens)
  if(NOT exact STREQUAL mac)
    message(FATAL_ERROR "seed ${seed}: exact and MAC sampled different tokens below min_context\n${exact}\n${mac}")
  endif()
  set(${out} "${exact}" PARENT_SCOPE)
endfunction()

sample(7 first a)
sample(7 again b)
sample(8 other c)
if(NOT first STREQUAL again)
  message(FATAL_ERROR "seed 7 gave different tokens on two runs\n${first}\n${again}")
endif()
if(first STREQUAL other)
  message(FATAL_ERROR "seeds 7 and 8 gave the same 30 sampled tokens: the seed is ignored\n${first}")
endif()
message(STATUS "seed 7: ${first}\nseed 8: ${other}")
