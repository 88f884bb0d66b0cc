# cmake -DTOOL=<macattn> -DMODEL=<dir> -DFIXTURE=<ref_greedy.json> -DWORK=<dir> -DATTENTION=<mode> -P check_greedy.cmake
#
# Runs `macattn generate` greedily on the fixture's prompt (tools/train/make_fixture.py: Hugging
# Face transformers' float32 greedy continuation of the shipped model) and checks that the
# prompt's token ids and every generated id are the fixture's. K/V in f32, as transformers.
file(READ "${FIXTURE}" fixture)
string(JSON prompt GET "${fixture}" prompt)
string(JSON new_tokens GET "${fixture}" new_tokens)
file(WRITE "${WORK}/greedy_prompt_${ATTENTION}.txt" "${prompt}")
set(json "${WORK}/greedy_${ATTENTION}.json")
execute_process(COMMAND ${TOOL} generate -m ${MODEL} -t 1 -f ${WORK}/greedy_prompt_${ATTENTION}.txt -n ${new_tokens}
                        --temp 0 --ignore-eos --attention ${ATTENTION} --kv-dtype f32 --progress off --json ${json}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "macattn generate failed (${rc})\nstdout: ${out}\nstderr: ${err}")
endif()
file(READ "${json}" result)

# "[a, b, c]" from either file, compared as canonical lists.
function(json_ids doc out)
  set(ids "")
  string(JSON n LENGTH "${doc}" ${ARGN})
  math(EXPR last "${n} - 1")
  foreach(i RANGE ${last})
    string(JSON id GET "${doc}" ${ARGN} ${i})
    list(APPEND ids ${id})
  endforeach()
  set(${out} "${ids}" PARENT_SCOPE)
endfunction()

json_ids("${fixture}" want_prompt prompt_ids)
json_ids("${result}" got_prompt prompt_tokens)
if(NOT got_prompt STREQUAL want_prompt)
  message(FATAL_ERROR "prompt ids differ from transformers'\n got:  ${got_prompt}\n want: ${want_prompt}")
endif()
json_ids("${fixture}" want greedy_ids)
string(JSON runs LENGTH "${result}" runs)
math(EXPR last_run "${runs} - 1")
foreach(r RANGE ${last_run})
  string(JSON mode GET "${result}" runs ${r} attention)
  json_ids("${result}" got runs ${r} tokens)
  if(NOT got STREQUAL want)
    message(FATAL_ERROR "${mode}: greedy ids differ from transformers'\n got:  ${got}\n want: ${want}\n${out}")
  endif()
  message(STATUS "${mode}: ${new_tokens} greedy ids identical to transformers'")
endforeach()
