# cmake -DTOOL=<macattn> -DMODEL=<dir> -DWORK=<dir> -P check_generate_both.cmake
#
# `--attention both --audit` on a short prompt with MAC matching from position 32: the output
# has both runs, the per-layer table, the audit line and the comparison; the JSON shows that
# MAC really hit (some heads, fewer K/V bytes than exact) and that every decode step was audited
# with a finite, small relative L2.
set(json "${WORK}/generate_both.json")
set(prompt "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ")
string(REPEAT "${prompt}" 4 prompt)
execute_process(COMMAND ${TOOL} generate -m ${MODEL} -t 1 -p "${prompt}" -n 40 --ignore-eos --attention both --audit
                        --mac-min-context 32 --mac-window 64 --mac-rect 8 --progress off --json ${json}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "macattn generate failed (${rc})\nstdout: ${out}\nstderr: ${err}")
endif()
foreach(field "=== exact attention ===" "=== mac attention ===" "prefill:" "tok/s" "head hit rate"
              "K/V bytes read / exact" "audit rel L2" "audit: the greedy token would have changed at"
              "=== exact vs MAC ===" "tokens: " "decode: exact")
  string(FIND "${out}" "${field}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "output lacks '${field}'\n${out}")
  endif()
endforeach()
file(READ "${json}" result)
string(JSON mode GET "${result}" runs 1 attention)
if(NOT mode STREQUAL "mac")
  message(FATAL_ERROR "second run is '${mode}', want mac")
endif()
string(JSON decode_steps GET "${result}" runs 1 decode_tokens)
string(JSON layers LENGTH "${result}" runs 1 layers)
math(EXPR last "${layers} - 1")
set(hits 0)
foreach(l RANGE ${last})
  string(JSON h GET "${result}" runs 1 layers ${l} heads_hit)
  string(JSON audited GET "${result}" runs 1 layers ${l} audit_steps)
  string(JSON l2 GET "${result}" runs 1 layers ${l} audit_rel_l2_max)
  string(JSON read GET "${result}" runs 1 layers ${l} kv_bytes_read)
  string(JSON exact GET "${result}" runs 1 layers ${l} kv_bytes_exact)
  math(EXPR hits "${hits} + ${h}")
  if(NOT audited EQUAL decode_steps)
    message(FATAL_ERROR "layer ${l}: ${audited} audited steps, want ${decode_steps}")
  endif()
  if(NOT l2 LESS 0.5)
    message(FATAL_ERROR "layer ${l}: audit relative L2 max ${l2}, want a small finite value")
  endif()
  if(read GREATER exact)
    message(FATAL_ERROR "layer ${l}: MAC read ${read} K/V bytes, more than exact's ${exact}")
  endif()
endforeach()
if(hits EQUAL 0)
  message(FATAL_ERROR "MAC never hit on a repetitive prompt with matching from position 32\n${out}")
endif()
message(STATUS "both + audit: ${hits} head hits over ${decode_steps} steps\n${out}")
