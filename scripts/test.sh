#!/usr/bin/env bash
# The single test command; .ci/run calls it. Three configurations, each in a build
# directory of its own and each built once (ccache makes a repeat cheap):
#
#   build/       the product: format check, then every CTest test (unit,
#                integration, a short crash soak)
#   build-asan/  the same suite under AddressSanitizer + UndefinedBehaviorSanitizer
#                (gcc, -O1; the soak is left out there)
#   build-fuzz/  the libFuzzer harnesses of fuzz/ (clang-14), a short bounded run of
#                each (docs/fuzzing.md has the long run)
#
# Arguments go to the first CTest run only (e.g. -R test_bus). To skip a stage by
# hand: PARRY_SKIP_ASAN=1, PARRY_SKIP_FUZZ=1. CI runs all three.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

configure() { # DIR CMAKE-ARGS...: configure DIR unless it already is
  local dir=$1
  shift
  [ -f "$dir/build.ninja" ] || cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
}

stage() { echo "== test.sh: $* ($(date +%H:%M:%S))"; }

stage "main build"
bash scripts/build.sh
# The Debian packages, for the package test (tests/package): CTest cannot build them.
stage "Debian packages"
cmake --build build --target package >/dev/null
# Unformatted code fails the run: one style, checked by the machine.
bash scripts/check-format.sh
# playwright-core for the browser tests, exactly as package-lock.json pins it.
if [ ! -f tests/browser/node_modules/.package-lock.json ] ||
  ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.parry-lock; then
  stage "browser test tools (npm ci)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error &&
    cp package-lock.json node_modules/.parry-lock)
fi
stage "main tests"
(cd build && ctest --output-on-failure --timeout 600 "$@")

if [ "${PARRY_SKIP_ASAN:-0}" != 1 ]; then
  stage "ASan+UBSan build"
  configure build-asan -DCMAKE_BUILD_TYPE=Debug -DPARRY_SANITIZE=ON
  ninja -C build-asan -j "$jobs" all_tests # the tests and the programs they run
  stage "ASan+UBSan tests"
  # Any report fails the test that caused it; the child processes of the
  # integration test (parryd, parry-agent) inherit the same options. The rig (its
  # namespaces and its VM), the browser and the package tests run once, in the main
  # stage: they are about the kernel, the console and the packaging, and the
  # integration tests cover the same server code under ASan.
  (cd build-asan &&
    ASAN_OPTIONS=detect_leaks=1:strict_init_order=1:detect_stack_use_after_return=1 \
      UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      ctest --output-on-failure --timeout 900 -LE "soak|rig|vm|browser|package")
fi

if [ "${PARRY_SKIP_FUZZ:-0}" != 1 ]; then
  stage "fuzz build"
  configure build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++-14 -DPARRY_FUZZ=ON
  ninja -C build-fuzz -j "$jobs" fuzz
  stage "fuzz runs"
  (cd build-fuzz && ctest --output-on-failure -L fuzz -j "$jobs")
fi
stage "all passed"
