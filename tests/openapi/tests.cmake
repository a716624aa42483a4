# docs/openapi.yaml against itself, the route table of actors/api.cpp and a live
# parryd (tests/openapi/check_openapi.py). Included from tests/CMakeLists.txt.
# /usr/bin/python3 on purpose: Debian's interpreter has python3-yaml and
# python3-jsonschema; a `python3` found on PATH (e.g. a pyenv shim) may lack them.
add_test(NAME openapi_check
  COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/openapi/check_openapi.py
    --spec ${CMAKE_SOURCE_DIR}/docs/openapi.yaml
    --routes ${CMAKE_SOURCE_DIR}/actors/api.cpp
    --bin-dir $<TARGET_FILE_DIR:parryd>)
set_tests_properties(openapi_check PROPERTIES TIMEOUT 180)
