# Makes the packaged /etc/parry/parryd.toml (cmake -P, run by packaging/cpack.cmake):
#
#   cmake -DPARRYD=<parryd> -DOUT=<file> -P gen-parryd-toml.cmake
#
# parryd writes the template itself (`parryd --print-config --toml`): every key with
# its meaning, legal values and default, commented out, except the keys set in the
# environment, which it writes out with their value. Only the two packaged paths are
# set, and nothing else of the builder's environment gets in (env -i).
#
# The result is loaded by this parryd before it is packaged: it must
# parse, and data_dir and web_dir must come from it.

foreach(var PARRYD OUT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "gen-parryd-toml: -D${var}=... is missing")
  endif()
endforeach()

set(data_dir "/var/lib/parry")
set(web_dir "/usr/share/parry/web")

execute_process(
  COMMAND env -i PARRY_DATA_DIR=${data_dir} PARRY_WEB_DIR=${web_dir}
          ${PARRYD} --print-config --toml
  RESULT_VARIABLE rc OUTPUT_VARIABLE text ERROR_VARIABLE err)
set(expected_data "\ndata_dir = \"${data_dir}\"\n")
set(expected_web "\nweb_dir = \"${web_dir}\"\n")
string(FIND "${text}" "${expected_data}" has_data)
string(FIND "${text}" "${expected_web}" has_web)
if(NOT rc EQUAL 0 OR has_data EQUAL -1 OR has_web EQUAL -1)
  string(STRIP "${err}" err)
  message(FATAL_ERROR "gen-parryd-toml: parryd --print-config --toml did not give "
    "the template with both paths set (exit ${rc}): ${err}")
endif()
file(WRITE "${OUT}.tmp" "${text}")

# The file as parryd reads it: it must load, and set both paths.
execute_process(
  COMMAND env -i ${PARRYD} --config ${OUT}.tmp --print-config
  RESULT_VARIABLE rc OUTPUT_VARIABLE effective ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "gen-parryd-toml: parryd refuses the packaged configuration "
    "${OUT}.tmp (exit ${rc}):\n${err}")
endif()
foreach(pair "data_dir=${data_dir}" "web_dir=${web_dir}")
  string(REPLACE "=" ";" pair "${pair}")
  list(GET pair 0 key)
  list(GET pair 1 value)
  if(NOT effective MATCHES "(^|\n)${key} = \"${value}\" +# file ")
    message(FATAL_ERROR "gen-parryd-toml: in ${OUT}.tmp parryd does not take "
      "${key} = \"${value}\" from the file:\n${effective}")
  endif()
endforeach()

# Every key parryd knows must be in the file, set or commented out ("#key = " or
# "key = ", in its [section]).
string(REPLACE "\n" ";" lines "${effective}")
set(missing "")
foreach(line IN LISTS lines)
  if(NOT line MATCHES "^([a-z0-9_.]+) = ")
    continue()
  endif()
  set(key "${CMAKE_MATCH_1}")
  set(body "${text}")
  set(name "${key}")
  if(key MATCHES "^([a-z0-9_]+)\\.([a-z0-9_]+)$")
    set(name "${CMAKE_MATCH_2}")
    string(FIND "${text}" "\n[${CMAKE_MATCH_1}]\n" at)
    if(at EQUAL -1)
      list(APPEND missing "${key}")
      continue()
    endif()
    string(SUBSTRING "${text}" ${at} -1 body)
  endif()
  if(NOT body MATCHES "\n#?${name} = ")
    list(APPEND missing "${key}")
  endif()
endforeach()
if(missing)
  list(JOIN missing "\n  " missing)
  message(FATAL_ERROR "gen-parryd-toml: parryd's template lacks keys:\n  ${missing}")
endif()

file(RENAME "${OUT}.tmp" "${OUT}")
