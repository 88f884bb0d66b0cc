# cmake -DTOOL=<macattn> -DARGS=<a;b;c> -DCODE=<n> -DEXPECT=<text> -P expect_exit.cmake
# Passes when the tool exits with CODE and its stderr contains EXPECT.
execute_process(COMMAND ${TOOL} ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL CODE)
  message(FATAL_ERROR "'${ARGS}': exit code ${rc}, want ${CODE}\nstdout: ${out}\nstderr: ${err}")
endif()
string(FIND "${err}" "${EXPECT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "'${ARGS}': stderr lacks '${EXPECT}'\nstderr: ${err}")
endif()
message(STATUS "'${ARGS}' -> exit ${CODE}: ${err}")
