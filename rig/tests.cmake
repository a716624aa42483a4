# Rig scenarios (rig/scenarios/<name>.sh), included from tests/CMakeLists.txt: one CTest
# test each, `rig_<name>`, running `parry-rig run <name>` on a rig of its own. Root
# only: elsewhere parry-rig exits 77 and CTest reports the test as skipped. They share
# the rig's addresses and names (and two CPUs), so they run one at a time. Label `rig`:
# `ctest -L rig` runs only them, `ctest -LE rig` everything else. Together they take
# about 3 minutes.
#
# TIMEOUT is per test; parry-rig gets PARRY_RIG_DEADLINE a little below it, so a stuck
# scenario is stopped by the rig itself and the rig is still torn down (CTest's own
# timeout kills without a chance to clean up; `parry-rig down` removes what that left).
set(_parry_rig_scenarios
  # name          timeout (s)
  isolate         90
  curve           60
  detect          90
  terminate       90
  start_process   60
  quarantine      60
  delete          60
  prevent         60
  deadman         120
  restart         90
  faults          240)

list(LENGTH _parry_rig_scenarios _n)
math(EXPR _last "${_n} - 1")
foreach(_i RANGE 0 ${_last} 2)
  math(EXPR _j "${_i} + 1")
  list(GET _parry_rig_scenarios ${_i} _name)
  list(GET _parry_rig_scenarios ${_j} _timeout)
  math(EXPR _deadline "${_timeout} - 20")
  add_test(NAME rig_${_name}
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/parry-rig run ${_name})
  set_tests_properties(rig_${_name} PROPERTIES
    ENVIRONMENT "PARRY_BIN_DIR=$<TARGET_FILE_DIR:parryd>;PARRY_RIG_DEADLINE=${_deadline}"
    LABELS rig
    SKIP_RETURN_CODE 77
    TIMEOUT ${_timeout}
    RUN_SERIAL TRUE)
endforeach()
unset(_parry_rig_scenarios)

# The VM endpoint (docs/rig.md, "VM endpoints"): the scenarios that act on an endpoint,
# run again on one rig whose endpoint is a VM with its own kernel under qemu (TCG), plus
# those only a VM can run (reboot). One test, label `vm` (not `rig`): booting the VM
# once for all of them keeps it to about 2.5 minutes. `parry-rig run --vm` skips (77)
# when not root or when qemu, busybox-static or Debian's kernel are missing.
add_test(NAME rig_vm
  COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/parry-rig run --vm
    curve isolate terminate start_process quarantine delete prevent deadman restart reboot)
set_tests_properties(rig_vm PROPERTIES
  ENVIRONMENT "PARRY_BIN_DIR=$<TARGET_FILE_DIR:parryd>;PARRY_RIG_DEADLINE=570"
  LABELS vm
  SKIP_RETURN_CODE 77
  TIMEOUT 600
  RUN_SERIAL TRUE)
