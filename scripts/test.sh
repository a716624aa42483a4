#!/usr/bin/env bash
# Builds Parry and runs every test through CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
# Unformatted code fails the run: one style, checked by the machine.
bash scripts/check-format.sh
cd build
ctest --output-on-failure --timeout 600 "$@"
