# The Debian packages, installed into a throwaway root (test_package.sh). CTest
# cannot build them: build the `package` target first (cmake --build build --target
# package); the test fails naming that command when the .deb files are missing or
# older than the programs. Root only (exit 77: skipped otherwise).
#
# Not in the instrumented builds (PARRY_SANITIZE, PARRY_FUZZ): their binaries are
# never packaged, and their build directories hold no .deb files.
if(PARRY_SANITIZE OR PARRY_FUZZ)
  return()
endif()
add_test(NAME package_install
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/package/test_package.sh ${CMAKE_BINARY_DIR})
set_tests_properties(package_install PROPERTIES
  LABELS package
  TIMEOUT 600
  SKIP_RETURN_CODE 77)
