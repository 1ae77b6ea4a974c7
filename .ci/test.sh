#!/usr/bin/env bash
# The README's test command: installs what is needed, builds, and runs every test suite:
#   1. unit tests (host)                        ctest -L unit
#   2. integration tests, relay mode (host)     ctest -L integration
#   3. the VM suite: the same integration tests inside qemu on Debian's 6.1 and 6.12 cloud
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

# Benchmark harness smoke run (tests/bench/run.sh --smoke: seconds, host only; the full matrix is
# a separate command, see docs/BENCHMARKS.md). Adds its "bench-smoke: N passed, M failed" line.
bench_log="$build/bench-smoke.log"
bash tests/bench/run.sh --smoke "$build" >"$bench_log" 2>&1
line=$(grep -E '^bench-smoke: [0-9]+ passed, [0-9]+ failed' "$bench_log" | tail -1)
if [[ -n $line ]]; then
  passed=$((passed + $(sed -E 's/^bench-smoke: ([0-9]+) passed.*/\1/' <<<"$line")))
  failed=$((failed + $(sed -E 's/^bench-smoke: [0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")))
  summary+=("$line")
  grep -E '^bench-smoke: FAIL' "$bench_log" | head -10
else
  failed=$((failed + 1))
  summary+=("bench-smoke: did not produce a summary (see $bench_log)")
  tail -20 "$bench_log"
fi

if [[ ${KTLS_SKIP_VM:-0} == 1 ]]; then
  summary+=("vm-suite: SKIPPED by KTLS_SKIP_VM=1")
else
  vm_log="$build/vm-suite.log"
  bash tests/vm/run-suite.sh "$build" 2>&1 | tee "$vm_log" | grep -E '^(VM |vm-suite:|kTLS kernel probe|  TLSv|  version|FAIL|\[  FAILED)' || true
  line=$(grep -E '^vm-suite: [0-9]+ passed, [0-9]+ failed' "$vm_log" | tail -1)
  if [[ -n $line ]]; then
    vp=$(sed -E 's/vm-suite: ([0-9]+) passed.*/\1/' <<<"$line")
    vf=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
    passed=$((passed + vp))
    failed=$((failed + vf))
    summary+=("$line")
    grep -E '^VM ' "$vm_log" | while read -r l; do echo "  $l"; done
  else
    failed=$((failed + 1))
    summary+=("vm-suite: did not produce a summary (see $vm_log)")
    tail -40 "$vm_log"
  fi
fi

# 4. deploy: images built and run with buildah, Helm chart, k8s manifests, alert rules, systemd
#    unit (tests/deploy/run.sh: one line per check, then "deploy: N passed, M failed, K skipped").
if [[ ${KTLS_SKIP_DEPLOY:-0} == 1 ]]; then
  summary+=("deploy: SKIPPED by KTLS_SKIP_DEPLOY=1")
else
  deploy_log="$build/deploy.log"
  bash tests/deploy/run.sh "$build" >"$deploy_log" 2>&1
  grep -E '^(ok|FAIL|skip|note|--) |^deploy: took|^      ' "$deploy_log"
  line=$(grep -E '^deploy: [0-9]+ passed, [0-9]+ failed' "$deploy_log" | tail -1)
  if [[ -n $line ]]; then
    passed=$((passed + $(sed -E 's/^deploy: ([0-9]+) passed.*/\1/' <<<"$line")))
    failed=$((failed + $(sed -E 's/^deploy: [0-9]+ passed, ([0-9]+) failed.*/\1/' <<<"$line")))
    summary+=("$line")
  else
    failed=$((failed + 1))
    summary+=("deploy: did not produce a summary (see $deploy_log)")
    tail -40 "$deploy_log"
  fi
fi

echo
echo "==== test summary ($(( $(date +%s) - t0 )) s) ===="
for s in "${summary[@]}"; do echo "  $s"; done
echo "$passed passed, $failed failed"
((failed == 0))
