# cmake -DTOOL=<macattn> -DARGS=<a;b;c> -DEXPECT=<text> -P expect_usage_error.cmake
# Passes when the tool exits with code 2 (bad command line) and its stderr contains EXPECT.
execute_process(COMMAND ${TOOL} ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 2)
  message(FATAL_ERROR "'${ARGS}': exit code ${rc}, want 2\nstdout: ${out}\nstderr: ${err}")
endif()
string(FIND "${err}" "${EXPECT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "'${ARGS}': stderr lacks '${EXPECT}'\nstderr: ${err}")
endif()
message(STATUS "'${ARGS}' -> exit 2: ${err}")
