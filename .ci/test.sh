#!/usr/bin/env bash
# The README's test command: installs what is needed, builds, and runs every test suite:
#   1. unit tests (host)                        ctest -L unit
#   2. integration tests, relay mode (host)     ctest -L integration
#   3. lint (clang-format, clang-tidy)          tests/lint/run.sh
#   4. the VM suite: the same integration tests inside qemu on Debian's 6.1 and 6.12 cloud
#      kernels with kTLS active (they FAIL there unless the kernel holds the keys)
# Prints one summary line per suite and a final "N passed, M failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
build=${KTLS_BUILD_DIR:-build}
export KTLS_BUILD_DIR=$build

bash .ci/install-deps.sh all || { echo "test: dependency install failed"; exit 1; }
bash .ci/build.sh || { echo "test: build failed"; exit 1; }

passed=0
failed=0
declare -a summary

# Runs one ctest label; adds its counts.
run_ctest() {
  local label=$1 log="$build/ctest-$1.log"
  (cd "$build" && ctest -L "$label" --output-on-failure -j "${KTLS_CTEST_JOBS:-2}" --timeout 600) >"$log" 2>&1
  local rc=$?
  local line
  line=$(grep -E 'tests passed, [0-9]+ tests failed out of' "$log" | tail -1)
  local total fail
  total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
  fail=$(sed -E 's/.*passed, ([0-9]+) tests failed.*/\1/' <<<"$line")
  if [[ -z $total || -z $fail ]]; then total=1; fail=1; fi
  passed=$((passed + total - fail))
  failed=$((failed + fail))
  summary+=("$label (host): $((total - fail)) passed, $fail failed")
  if ((rc != 0)); then
    echo "---- $label failures ----"
    grep -E 'Failed|FAILED|\*\*\*' "$log" | head -40
    tail -60 "$log"
  fi
}

run_ctest unit
run_ctest integration

# run_stage NAME SHOW_REGEX COMMAND...: runs a suite whose last "NAME: N passed, M failed" line
# (", K skipped" may follow) is added to the totals; lines matching SHOW_REGEX are shown as it
# runs. A suite that prints no such line counts as one failure. KTLS_SKIP_<NAME>=1 skips it.
run_stage() {
  local name=$1 show=$2
  shift 2
  local skip_var="KTLS_SKIP_$(tr 'a-z-' 'A-Z_' <<<"$name")"
  if [[ ${!skip_var:-0} == 1 ]]; then
    summary+=("$name: SKIPPED by $skip_var=1")
    return
  fi
  local log="$build/$name.log"
  "$@" 2>&1 | tee "$log" | grep -E "$show" || true
  local line
  line=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed" "$log" | tail -1)
  if [[ -z $line ]]; then
    failed=$((failed + 1))
    summary+=("$name: did not produce a summary (see $log)")
    tail -40 "$log"
    return
  fi
  passed=$((passed + $(sed -E "s/^$name: ([0-9]+) passed.*/\1/" <<<"$line")))
  failed=$((failed + $(sed -E "s/^$name: [0-9]+ passed, ([0-9]+) failed.*/\1/" <<<"$line")))
  summary+=("$line")
}

# Lint: clang-format over the project's C/C++ sources, clang-tidy over agent/ server/ client/
# proto/ with this build's compile_commands.json (tests/lint/run.sh: "FAIL format|tidy: ..." per
# file, then "lint: N passed, M failed", one check per file or translation unit).
run_stage lint '^(FAIL|format:|tidy:)' bash tests/lint/run.sh "$build"
# Benchmark harness smoke run (seconds, host only; the full matrix is a separate command, see
# docs/BENCHMARKS.md).
run_stage bench-smoke '^bench-smoke: FAIL' bash tests/bench/run.sh --smoke "$build"
# Fuzzers (libFuzzer, clang, own build directory), each for a bounded time.
run_stage fuzz '^fuzz: ' bash tests/fuzz/run.sh "${KTLS_FUZZ_SECONDS:-15}"
# The VM suite: integration + unit tests inside qemu on Debian's 6.1 and 6.12 cloud kernels
# with kTLS active.
run_stage vm-suite '^(VM |kTLS kernel probe|  TLSv|  version|FAIL|\[  FAILED)' \
  bash tests/vm/run-suite.sh "$build"
# deploy: images built and run with buildah, Helm chart, k8s manifests, alert rules, systemd
# unit (tests/deploy/run.sh: one line per check, then "deploy: N passed, M failed, K skipped").
run_stage deploy '^(ok|FAIL|skip|note|--) |^deploy: took|^      ' bash tests/deploy/run.sh "$build"

echo
echo "==== test summary ($(( $(date +%s) - t0 )) s) ===="
for s in "${summary[@]}"; do echo "  $s"; done
echo "$passed passed, $failed failed"
((failed == 0))
