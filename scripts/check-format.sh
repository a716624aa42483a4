#!/usr/bin/env bash
# Fails when a tracked C++ file differs from what the root .clang-format makes of it.
set -euo pipefail
cd "$(dirname "$0")/.."
git ls-files -z '*.cpp' '*.hpp' | xargs -0 clang-format --dry-run -Werror
