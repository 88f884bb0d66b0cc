# cmake -DEXAMPLE=api_example.cpp -DREADME=README.md -P check_readme.cmake
# Passes when README.md contains the example's lines between "// README example begin" and
# "// README example end" verbatim.
file(READ "${EXAMPLE}" example)
file(READ "${README}" readme)
string(FIND "${example}" "// README example begin\n" begin)
string(FIND "${example}" "// README example end" end)
if(begin EQUAL -1 OR end EQUAL -1)
  message(FATAL_ERROR "${EXAMPLE}: marker lines not found")
endif()
string(LENGTH "// README example begin\n" marker_len)
math(EXPR begin "${begin} + ${marker_len}")
math(EXPR len "${end} - ${begin}")
string(SUBSTRING "${example}" ${begin} ${len} snippet)
string(FIND "${readme}" "${snippet}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md does not quote ${EXAMPLE} verbatim: copy the lines between the "
                      "marker lines into README.md's API example")
endif()

# And .ci/run runs README.md's test command (the one line that builds and runs ctest) verbatim.
if(DEFINED CI_RUN)
  file(READ "${CI_RUN}" ci)
  string(REGEX MATCH "cmake -S [^\n`]*ctest [^\n`]*" test_command "${readme}")
  if(test_command STREQUAL "")
    message(FATAL_ERROR "README.md: no test command (a line 'cmake -S ... ctest ...') found")
  endif()
  string(FIND "${ci}" "${test_command}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR ".ci/run does not run README.md's test command verbatim:\n  ${test_command}")
  endif()
endif()
