#!/usr/bin/env bash
# Configures and builds everything into ${KTLS_BUILD_DIR:-build}. Used by the README commands.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${KTLS_BUILD_DIR:-build}
jobs=${KTLS_JOBS:-$(nproc)}
if [[ ! -f $build/build.ninja ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
echo "build: compiling with $jobs jobs into $build/ ..."
start=$(date +%s)
if ! cmake --build "$build" -j "$jobs" >"$build/build.log" 2>&1; then
  grep -E 'error|Error' "$build/build.log" | head -40
  tail -30 "$build/build.log"
  echo "build: FAILED (full log: $build/build.log)"
  exit 1
fi
echo "build: done in $(( $(date +%s) - start )) s"
