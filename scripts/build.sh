#!/usr/bin/env bash
# Installs what the build needs (Debian 12 packages) and builds everything into
# build/ with Ninja. Incremental: a second run rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build_type=${PARRY_BUILD_TYPE:-RelWithDebInfo}
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="$build_type" >/dev/null
fi
# Two cores and heavy C++ headers: more parallel jobs only thrash memory and cache.
ninja -C build -j "$(nproc)"
